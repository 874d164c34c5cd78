"""The suite on a real Paddle CustomDevice: the simulated ``npu`` (hwdeploy_customdevice.simulated, a C++
plugin Paddle loads like a vendor's) driven by the hwdeploy-ascend plugin. Ops without a device kernel really
run on the CPU; the fallback check must name each one with Paddle's reason, while parity (the numbers are
right) passes.

Skips when the simulated device cannot be built here (no cmake/g++) or the ascend plugin is not installed.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_npu_root():
    ascend = pytest.importorskip("hwdeploy_ascend.plugin", reason="hwdeploy-ascend is not installed"
                                 " (pip install -e plugins/customdevice -e plugins/ascend)")
    from hwdeploy_customdevice.testing import kit

    # Built as the plugin's own type and visible-devices variable (the same cached build its tests use).
    return kit.sim_root(ascend.ASCEND.device_type, ascend.ASCEND.visible_env)  # builds once or skips saying why


def test_per_op_fallback_on_a_custom_device_is_reported_with_reasons(run_suite, sim_npu_root, monkeypatch):
    from hwdeploy.contract.receipt import FORCED_OFF, NO_KERNEL

    monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(sim_npu_root))
    monkeypatch.setenv("CUSTOM_DEVICE_BLACK_LIST", "relu")  # Paddle's own switch: relu forced onto the CPU
    report = run_suite("npu:0", ("mlp", "seqreg"), only=["parity", "fallback_receipt"])
    by_id = {c["id"]: c for c in report["checks"]}
    for model in ("mlp", "seqreg"):
        assert by_id[f"{model}/fp32/load"]["status"] == "passed"
        assert by_id[f"{model}/fp32/parity"]["status"] == "passed"  # right numbers...
        receipt = by_id[f"{model}/fp32/fallback_receipt"]
        assert receipt["status"] == "failed"  # ...partly computed on the host
        assert receipt["figures"]["ops_known"] is True and receipt["figures"]["actual"] == "npu:0"
    mlp = by_id["mlp/fp32/fallback_receipt"]["figures"]["off_device_ops_by_reason"]
    assert any(op.startswith("relu") for op in mlp[FORCED_OFF]), mlp
    seqreg = by_id["seqreg/fp32/fallback_receipt"]["figures"]["off_device_ops_by_reason"]
    assert {op.split()[0] for op in seqreg[NO_KERNEL]} >= {"embedding", "tanh"}, seqreg
    assert "no kernel on the device" in by_id["seqreg/fp32/fallback_receipt"]["message"]


def test_a_detector_with_nms_passes_parity_on_the_simulated_npu(sim_npu_root, fault_env, monkeypatch):
    """The zoo's tiny_detector (multiclass_nms3, inputs image and scale_factor) on the simulated npu: the numbers
    differ from the CPU's by roundings (its own conv kernels), the detections match; NMS itself has no kernel
    there and the receipt says so."""
    from hwdeploy.contract.receipt import NO_KERNEL
    from hwdeploy_conformance import Conformance, build_report

    monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(sim_npu_root))
    conformance = Conformance("npu:0", ["zoo:tiny_detector"], config=fault_env["config"],
                              only=["parity", "fallback_receipt"])
    conformance.run()
    report = build_report(conformance)
    by_id = {c["id"]: c for c in report["checks"]}
    parity = by_id["tiny_detector/fp32/parity"]
    assert parity["status"] == "passed", parity["message"]
    assert "detections matched by class and IoU" in parity["message"]
    assert parity["figures"]["worst"]["worst_score_error"] <= 5e-4
    receipt = by_id["tiny_detector/fp32/fallback_receipt"]
    assert receipt["status"] == "failed"
    off = receipt["figures"]["off_device_ops_by_reason"][NO_KERNEL]
    assert any(op.startswith("multiclass_nms3") for op in off), off
