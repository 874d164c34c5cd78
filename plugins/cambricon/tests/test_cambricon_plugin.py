"""The Cambricon plugin without its device: discovery says why, errors instead of aborts, the vendor tool.

The tests are the shared CustomDevice plugin suite (``PluginSuite`` in hwdeploy_customdevice.testing.suite),
run for this plugin as conftest.py's ``vendor`` describes it. The hardware test (``-m cambricon``) runs in a
lab with a real Cambricon MLU; here it skips with the reason.
"""

from __future__ import annotations

import pytest

from hwdeploy_customdevice.testing import suite


class TestCambriconPlugin(suite.PluginSuite):
    @pytest.mark.cambricon
    def test_cambricon_hardware_zoo_parity_and_receipts(self, vendor):
        self.check_hardware_zoo_parity_and_receipts(vendor)


def test_the_options_reference_documents_this_plugin():
    from pathlib import Path

    import hwdeploy
    from hwdeploy.sdk.testing import assert_options_documented

    declared = [(p, s) for p, s in hwdeploy.option_schemas() if p == "cambricon"]
    assert declared
    assert_options_documented(declared, Path(__file__).resolve().parents[3] / "docs" / "options.md")
