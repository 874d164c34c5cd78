"""``hwdeploy conformance`` on the simulated device (Ascend plugin): it reports the fallback, with evidence.

The test is the shared CustomDevice plugin suite's (``ConformanceSuite`` in simdevice/simdevice_plugin_suite.py),
run for this plugin as conftest.py's ``vendor`` describes it.
"""

from __future__ import annotations

import simdevice_plugin_suite as suite


class TestAscendConformance(suite.ConformanceSuite):
    pass
