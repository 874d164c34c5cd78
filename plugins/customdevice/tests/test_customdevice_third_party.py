"""A third-party CustomDevice vendor, tested the way its own repository would test it.

The plugin is the README's 13 lines (a ``gcu`` device whose runtime reads ``TOPS_VISIBLE_DEVICES``),
installed through a real entry point; the tests are the family's shared suites from
``hwdeploy_customdevice.testing``, run on the simulated device built as ``gcu`` with that variable: a type
and a variable the family itself knows nothing about.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hwdeploy
from hwdeploy.sdk.testing import install_plugin, plugins_on_path

from hwdeploy_customdevice import simulated
from hwdeploy_customdevice.testing import suite
from hwdeploy_customdevice.testing.suite import VendorUnderTest, vendor_fixture

README = Path(__file__).resolve().parents[1] / "README.md"
# `acme-smi info --usage -i 0` as the sampler runs it for card 0: 37% busy.
SMI_USAGE = "Card 0: Acme GCU\n  Usage : 37 %\n"


def readme_plugin() -> str:
    """The plugin module exactly as the README shows it (so the README cannot rot)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    plugin = [b for b in blocks if "globals().update(" in b]
    assert len(plugin) == 1, "the README must show exactly one plugin module"
    return plugin[0]


@pytest.fixture(scope="module", autouse=True)
def acme_plugin_installed(tmp_path_factory):
    """The vendor's package, as pip would install it (entry point ``acme``), for this module's tests only."""
    site = install_plugin(tmp_path_factory.mktemp("site"), "acme", readme_plugin(), requires=["hwdeploy>=0.1,<0.2"])
    with plugins_on_path(site):  # also on PYTHONPATH: the kit's child processes see the plugin too
        yield


vendor = vendor_fixture(VendorUnderTest(
    plugin="acme", kind="gcu", hardware="Acme GCU", plugin_object="hwdeploy_test_acme:ACME",
    distribution="hwdeploy-test-acme", visible_env="TOPS_VISIBLE_DEVICES", install_hint="paddle-custom-gcu",
    smi="acme-smi", smi_usage_args="info --usage -i 0", smi_usage_output=SMI_USAGE,
))


def test_readme_plugin_is_thirteen_lines():
    assert len(readme_plugin().strip().splitlines()) == 13


class TestThirdPartyPlugin(suite.PluginSuite):
    pass


class TestThirdPartySimulatedDevice(suite.SimulatedDeviceSuite):
    def test_only_the_vendors_own_variable_hides_devices(self, vendor, root, monkeypatch):
        # Built for TOPS_VISIBLE_DEVICES, the simulated gcu ignores every other vendor's variable.
        monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(root))
        monkeypatch.delenv("TOPS_VISIBLE_DEVICES", raising=False)
        monkeypatch.setenv(simulated.COUNT_ENV, "2")
        for other in ("ASCEND_RT_VISIBLE_DEVICES", "MLU_VISIBLE_DEVICES", "GCU_VISIBLE_DEVICES"):
            monkeypatch.setenv(other, "")
        assert [(d.id, d.available) for d in vendor.ours(hwdeploy.devices(refresh=True))] == [
            ("gcu:0", True), ("gcu:1", True)]
        assert (root / "build.txt").read_text().count("visible_env=TOPS_VISIBLE_DEVICES") == 1


def test_simulated_device_refuses_a_bad_variable_name():
    with pytest.raises(ValueError, match="environment variable name"):
        simulated.build("gcu", visible_env="TOPS VISIBLE")
