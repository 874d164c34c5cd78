"""docs/plugin-authors.md's complete plugin, installed through a real entry point and used the way the guide says:
if the guide's code or its promises drift from hwdeploy, this fails."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hwdeploy
from hwdeploy import UnsupportedOpsError, zoo
from hwdeploy.contract.manager import get_plugin_manager
from hwdeploy.sdk.testing import install_plugin, plugins_on_path, rel_l2

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugin-authors.md"


def guide_blocks() -> dict[str, str]:
    """``<!-- example: NAME -->`` followed by a fenced python block: NAME -> code; and the usage snippets."""
    text = GUIDE.read_text()
    named = dict(re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, re.S))
    return named


@pytest.fixture()
def acme_site(tmp_path, monkeypatch):
    source = guide_blocks()["hwdeploy_acme.py"]
    install_plugin(tmp_path, "acme", source, module="hwdeploy_acme", requires=["hwdeploy>=0.1"])
    monkeypatch.setenv("ACME_EMULATOR", "1")
    with plugins_on_path(tmp_path):
        yield tmp_path


def test_the_guide_has_its_example():
    assert "hwdeploy_acme.py" in guide_blocks()


def test_absent_card_is_reported_with_how_to_fix_it(acme_site, monkeypatch):
    monkeypatch.delenv("ACME_EMULATOR")
    acme = [d for d in hwdeploy.devices(refresh=True) if d.kind == "acme"]
    assert len(acme) == 1 and not acme[0].available and "ACME_EMULATOR=1" in acme[0].reason
    with pytest.raises(hwdeploy.DeviceNotFoundError, match="ACME_EMULATOR=1"):
        hwdeploy.predictor("zoo:mlp", device="acme:0")


def test_the_example_plugin_runs_with_a_truthful_receipt(acme_site):
    acme = next(d for d in hwdeploy.devices(refresh=True) if d.kind == "acme")
    assert acme.available and acme.priority < 0 and acme.host_compute and acme.plugin == "acme"
    # priority < 0: auto never chooses it
    assert hwdeploy.predictor("zoo:mlp", device="auto").device.kind == "cpu"
    p = hwdeploy.predictor("zoo:mlp", device="acme:0")
    inputs = zoo.sample_inputs("mlp", batch=4)
    got, = p.run(*inputs)
    want, = hwdeploy.predictor("zoo:mlp", device="cpu").run(*inputs)
    assert rel_l2(want, got) < 1e-5
    receipt = p.receipt()
    assert receipt.actual == "acme:0" and receipt.plugin == "acme" and receipt.requested == "acme:0"
    assert receipt.ops_known and {op.device for op in receipt.ops} == {"acme:0"} and receipt.fallback_reasons() == []
    twin = p.clone()
    assert np.array_equal(twin.run(*inputs)[0], got) and twin.receipt().plugin == "acme"


def test_the_conversion_is_cached_and_refuses_unsupported_ops(acme_site):
    first = hwdeploy.convert("zoo:mlp", "acme", refresh=True)
    again = hwdeploy.convert("zoo:mlp", "acme")
    assert not first.cached and again.cached and again.directory == first.directory
    assert json.loads(again.path().read_text())["ops"]
    with pytest.raises(UnsupportedOpsError) as caught:
        hwdeploy.convert("zoo:mobilenet_v2", "acme")
    assert "pd_op.conv2d" in caught.value.ops and "pd_op.matmul" not in caught.value.ops


def test_options_are_refused_with_option_error(acme_site):
    with pytest.raises(hwdeploy.OptionError, match="unknown option"):
        hwdeploy.predictor("zoo:mlp", device="acme:0", turbo=True)
    with pytest.raises(hwdeploy.OptionError, match="threads"):
        hwdeploy.predictor("zoo:mlp", device="acme:0", threads=0)
    assert get_plugin_manager().statuses["acme"].ok  # a user's mistake is not a broken plugin
    # The schemas the hooks check with are the ones `hwdeploy options` shows.
    declared = {schema.owner: schema for plugin, schema in hwdeploy.option_schemas() if plugin == "acme"}
    assert set(declared) == {"acme backend", "acme conversion"} and declared["acme backend"].names() == {"threads"}
    with pytest.raises(hwdeploy.OptionError, match="acme conversion: unknown option"):
        hwdeploy.convert("zoo:mlp", "acme", opset=13)


def test_the_sampler_sees_the_emulator_busy_then_idle(acme_site):
    acme = next(d for d in hwdeploy.devices(refresh=True) if d.kind == "acme")
    _plugin, sampler = get_plugin_manager().call_first("hwdeploy_utilization_sampler", device=acme)
    p = hwdeploy.predictor("zoo:mobilenet_v2", device="cpu")  # not acme: the emulator stays idle
    sampler.start()
    for _ in range(20):
        p.run(*zoo.sample_inputs("mobilenet_v2"))
    idle = sampler.stop()
    acme_p = hwdeploy.predictor("zoo:mlp", device="acme:0")
    x = zoo.sample_inputs("mlp", batch=256)
    sampler.start()
    for _ in range(2000):
        acme_p.run(*x)
    busy = sampler.stop()
    assert idle["samples"] > 0 and idle["mean_busy"] == 0.0
    assert busy["samples"] > 0 and busy["mean_busy"] > 0.2


def test_hwdeploy_plugins_and_convert_list_show_it(acme_site):
    env = dict(os.environ, PYTHONPATH=str(acme_site))
    rows = json.loads(subprocess.run([sys.executable, "-m", "hwdeploy", "plugins", "--json"], capture_output=True,
                                     text=True, env=env, timeout=120, check=True).stdout)
    assert next(r for r in rows if r["name"] == "acme")["state"] == "loaded"
    targets = json.loads(subprocess.run([sys.executable, "-m", "hwdeploy", "convert", "--list", "--json"],
                                        capture_output=True, text=True, env=env, timeout=120, check=True).stdout)
    assert {"target": "acme", "plugin": "acme"}.items() <= next(t for t in targets if t["target"] == "acme").items()
