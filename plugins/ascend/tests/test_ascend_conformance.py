"""``hwdeploy conformance`` on the simulated device (Ascend plugin): it reports the fallback, with evidence.

The test is the shared CustomDevice plugin suite's (``ConformanceSuite`` in hwdeploy_customdevice.testing.suite),
run for this plugin as conftest.py's ``vendor`` describes it.
"""

from __future__ import annotations

from hwdeploy_customdevice.testing import suite


class TestAscendConformance(suite.ConformanceSuite):
    pass
