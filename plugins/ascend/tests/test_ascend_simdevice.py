"""The Ascend plugin on a simulated Paddle CustomDevice built as its device type (hwdeploy_customdevice.simulated).

The tests are the shared CustomDevice plugin suite (``SimulatedDeviceSuite`` in
hwdeploy_customdevice.testing.suite, which says what the simulated device is), run on ``npu`` as
conftest.py's ``vendor`` describes this plugin, plus the Ascend-only test below.
"""

from __future__ import annotations

from hwdeploy.contract.receipt import NO_KERNEL

from hwdeploy_customdevice.testing import kit, suite


class TestAscendSimulatedDevice(suite.SimulatedDeviceSuite):
    def test_ascend_placement_is_read_in_a_fresh_process_when_paddle_ran_first(self, env, models):
        # The user's process ran Paddle's interpreter before hwdeploy could turn the kernel-program dump on:
        # the receipt must still name the fallen-back op, read from the same config in a fresh process.
        receipt = kit.child_value(kit.in_child("scenario_paddle_ran_first", str(models / "mlp_softmax"), "npu:0",
                                               env=env))
        assert any("placement read in a fresh process" in e for e in receipt["evidence"]), receipt["evidence"]
        assert receipt["ops_known"] and kit.host_ops(receipt, "npu:0") == {("softmax", NO_KERNEL): 1}
        assert kit.device_counts(receipt, "npu:0") == {"matmul": 2, "add": 2, "relu": 1}
