"""What the Cambricon plugin's tests expect of it: the ``vendor`` the shared CustomDevice plugin suite runs against.

The suite (hwdeploy_customdevice.testing.suite) is the same for every CustomDevice vendor plugin; the
``test_cambricon_*.py`` files here run it for this plugin.
"""

from __future__ import annotations

from hwdeploy_customdevice.testing.suite import VendorUnderTest, vendor_fixture

# `cnmon info -u -c 0` as the sampler runs it for card 0 (abridged): the MLU is 37% busy on average.
CNMON_USAGE = """\
Card 0                 [MLU370-S4]
Utilization
  MLU Average          : 37 %
  MLU 00-03            : 37 %  36 %  38 %  37 %
"""

vendor = vendor_fixture(VendorUnderTest(
    plugin="cambricon", kind="mlu", hardware="Cambricon MLU", plugin_object="hwdeploy_cambricon.plugin:CAMBRICON",
    other_kind="npu",  # Ascend's kind, absent on the simulated mlu
    visible_env="MLU_VISIBLE_DEVICES", install_hint="paddle-custom-mlu",
    smi="cnmon", smi_usage_args="info -u -c 0", smi_usage_output=CNMON_USAGE,
))
