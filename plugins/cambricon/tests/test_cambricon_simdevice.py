"""The Cambricon plugin on a simulated Paddle CustomDevice built as its device type (simdevice/ in the repository).

The tests are the shared CustomDevice plugin suite (``SimulatedDeviceSuite`` in
simdevice/simdevice_plugin_suite.py, which says what the simulated device is), run on ``mlu`` as
conftest.py's ``vendor`` describes this plugin.
"""

from __future__ import annotations

import simdevice_plugin_suite as suite


class TestCambriconSimulatedDevice(suite.SimulatedDeviceSuite):
    pass
