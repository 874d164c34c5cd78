"""What the Ascend plugin's tests expect of it: the ``vendor`` the shared CustomDevice plugin suite runs against.

The suite (hwdeploy_customdevice.testing.suite) is the same for every CustomDevice vendor plugin; the
``test_ascend_*.py`` files here run it for this plugin, next to the Ascend-only tests.
"""

from __future__ import annotations

from hwdeploy_customdevice.testing.suite import VendorUnderTest, vendor_fixture

# `npu-smi info -t usages -i 0` as the sampler runs it for card 0 (abridged): the AI Core is 37% busy.
NPU_SMI_USAGE = """\
        Memory Usage Rate(%)          : 3
        Aicore Usage Rate(%)          : 37
        Aivector Usage Rate(%)        : 0
"""

vendor = vendor_fixture(VendorUnderTest(
    plugin="ascend", kind="npu", hardware="Huawei Ascend NPU", plugin_object="hwdeploy_ascend.plugin:ASCEND",
    other_kind="mlu",  # Cambricon's kind, absent on the simulated npu
    visible_env="ASCEND_RT_VISIBLE_DEVICES", install_hint="paddle-custom-npu",
    smi="npu-smi", smi_usage_args="info -t usages -i 0", smi_usage_output=NPU_SMI_USAGE,
))
