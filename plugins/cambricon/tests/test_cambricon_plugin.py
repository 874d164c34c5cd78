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
