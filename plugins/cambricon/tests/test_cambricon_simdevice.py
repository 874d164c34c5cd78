"""The Cambricon plugin on a simulated Paddle CustomDevice built as its device type (hwdeploy_customdevice.simulated).

The tests are the shared CustomDevice plugin suite (``SimulatedDeviceSuite`` in
hwdeploy_customdevice.testing.suite, which says what the simulated device is), run on ``mlu`` as
conftest.py's ``vendor`` describes this plugin.
"""

from __future__ import annotations

from hwdeploy_customdevice.testing import suite


class TestCambriconSimulatedDevice(suite.SimulatedDeviceSuite):
    pass
