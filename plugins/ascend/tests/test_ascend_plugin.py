"""The Ascend plugin without its device: discovery says why, errors instead of aborts, the vendor tool.

The tests are the shared CustomDevice plugin suite (``PluginSuite`` in hwdeploy_customdevice.testing.suite),
run for this plugin as conftest.py's ``vendor`` describes it. The hardware test below (``-m ascend``) runs in
a lab with a real Ascend NPU; here it skips with the reason.
"""

from __future__ import annotations

import pytest

from hwdeploy_customdevice.testing import suite


class TestAscendPlugin(suite.PluginSuite):
    @pytest.mark.ascend
    def test_ascend_hardware_zoo_parity_and_receipts(self, vendor):
        self.check_hardware_zoo_parity_and_receipts(vendor)
