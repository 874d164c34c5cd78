"""Plugins load through real entry points; broken ones are reported and skipped, never break the core."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import hwdeploy
from hwdeploy import FallbackError
from hwdeploy.contract.manager import get_plugin_manager
from hwdeploy.sdk.testing import install_plugin, plugins_on_path

GOOD = """
from hwdeploy import Device, hookimpl

@hookimpl
def hwdeploy_discover_devices():
    return [Device("goodsim", 0, name="a well-behaved test device", backend="none", available=False,
                   reason="simulated absence: no goodsim card")]
"""

BROKEN = {
    "import-error": ("raise ImportError('libacme.so.3: cannot open shared object file')", "libacme.so.3"),
    "system-exit": ("import sys\nsys.exit(3)", "SystemExit"),
    "discover-raises": ("""
from hwdeploy import hookimpl

@hookimpl
def hwdeploy_discover_devices():
    raise RuntimeError("driver probe exploded")
""", "driver probe exploded"),
    "discover-garbage": ("""
from hwdeploy import hookimpl

@hookimpl
def hwdeploy_discover_devices():
    return "npu:0"
""", "instead of a list"),
    "create-raises": ("""
from hwdeploy import Device, hookimpl

@hookimpl
def hwdeploy_discover_devices():
    return [Device("flaky", 0, backend="flaky", priority=95)]

@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if device.kind == "flaky":
        raise MemoryError("out of device memory")
""", "out of device memory"),
    "unknown-hook": ("""
from hwdeploy import hookimpl

@hookimpl
def hwdeploy_discover_device():  # typo: not a hwdeploy hook
    return []
""", "hwdeploy_discover_device"),
}


@pytest.fixture()
def broken_site(tmp_path):
    install_plugin(tmp_path, "good", GOOD)
    for name, (source, _) in BROKEN.items():
        install_plugin(tmp_path, name, source)
    install_plugin(tmp_path, "too-new", GOOD.replace("goodsim", "newsim"), requires=["hwdeploy>=99"])
    install_plugin(tmp_path, "old-paddle", GOOD.replace("goodsim", "oldsim"), requires=["paddlepaddle<2"])
    return tmp_path


def test_broken_plugins_are_reported_and_the_core_still_works(broken_site, tiny_mlp):
    with plugins_on_path(broken_site):
        found = hwdeploy.devices()
        kinds = {d.kind for d in found}
        assert "cpu" in kinds and "goodsim" in kinds and "flaky" in kinds
        assert not kinds & {"newsim", "oldsim"}  # incompatible plugins are never imported
        # auto tries the flaky device first (priority 95), records its failure and runs on the CPU.
        p = hwdeploy.predictor(tiny_mlp)
        assert p.device.kind == "cpu"
        assert any("flaky:0" in s and "out of device memory" in s for s in p.receipt().auto_skipped)
        assert p.run(np.ones((1, 8), "float32"))[0].shape == (1, 4)
        with pytest.raises(hwdeploy.PluginError, match="out of device memory"):
            hwdeploy.predictor(tiny_mlp, device="flaky")
        statuses = get_plugin_manager().statuses
        for name, (_, error) in BROKEN.items():
            status = statuses[name]
            text = status.error + " ".join(status.hook_errors.values())
            assert not status.ok and error in text, (name, status)
        assert statuses["too-new"].state == "incompatible" and "hwdeploy>=99" in statuses["too-new"].error
        assert statuses["old-paddle"].state == "incompatible" and "paddlepaddle" in statuses["old-paddle"].error
        assert statuses["good"].ok and statuses["cpu"].ok


def test_hwdeploy_plugins_command_shows_failures(broken_site):
    import os

    env = dict(os.environ, PYTHONPATH=str(broken_site), COLUMNS="250")
    out = subprocess.run([sys.executable, "-m", "hwdeploy", "plugins", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["import-error"]["state"] == "import-failed" and "libacme" in rows["import-error"]["error"]
    assert rows["discover-raises"]["state"] == "hook-failed"
    assert "driver probe exploded" in rows["discover-raises"]["hook_errors"]["hwdeploy_discover_devices"]
    assert rows["too-new"]["state"] == "incompatible"
    assert rows["cpu"]["state"] == "loaded"
    human = subprocess.run([sys.executable, "-m", "hwdeploy", "plugins"], capture_output=True, text=True, env=env,
                           timeout=120, )
    assert human.returncode == 0 and "incompatible" in human.stdout and "import-failed" in human.stdout
    devices = subprocess.run([sys.executable, "-m", "hwdeploy", "devices", "--json"], capture_output=True, text=True,
                             env=env, timeout=120)
    listed = {(d["id"], d["plugin"]): d for d in json.loads(devices.stdout)}
    assert listed[("goodsim:0", "good")]["reason"] == "simulated absence: no goodsim card"
    assert listed[("cpu:0", "cpu")]["available"]


# A plugin that builds its predictor with Paddle's real enable_use_gpu: on this CPU-only wheel Paddle logs one
# line and runs on the CPU. The core's fail-closed policy must catch it from Paddle's own state.
SILENT_GPU = """
from hwdeploy import Device, hookimpl
from hwdeploy.sdk import paddle_inference as pi

@hookimpl
def hwdeploy_discover_devices():
    return [Device("gpu", 0, name="claimed GPU", backend="naive-gpu", priority=100)]

@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if device.backend != "naive-gpu":
        return None
    config = pi.make_config(model)
    config.enable_use_gpu(256, device.index)
    return pi.PaddleInferencePredictor(model, device, config, backend="naive-gpu")
"""


@pytest.fixture()
def silent_gpu_site(tmp_path):
    install_plugin(tmp_path, "naive-gpu", SILENT_GPU)
    return tmp_path


def test_real_enable_use_gpu_fallback_is_refused_by_default(silent_gpu_site, tiny_mlp):
    with plugins_on_path(silent_gpu_site):
        with pytest.raises(FallbackError) as info:
            hwdeploy.predictor(tiny_mlp, device="gpu", backend="naive-gpu")
    receipt = info.value.receipt
    assert receipt.selected == "gpu:0" and receipt.actual == "cpu:0"
    assert "use_gpu()=False" in " ".join(receipt.evidence)
    assert "runs on cpu:0" in str(info.value)


def test_fallback_policy_warn_and_allow(silent_gpu_site, tiny_mlp):
    x = np.ones((2, 8), "float32")
    with plugins_on_path(silent_gpu_site):
        with pytest.warns(RuntimeWarning, match="runs on cpu:0"):
            p = hwdeploy.predictor(tiny_mlp, device="gpu:0", backend="naive-gpu", fallback="warn")
        assert p.device.kind == "cpu"  # the predictor says where it really runs
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            q = hwdeploy.predictor(tiny_mlp, device="gpu:0", backend="naive-gpu", fallback="allow")
        assert q.receipt().fell_back and q.receipt().policy == "allow"
        np.testing.assert_allclose(p.run(x)[0], hwdeploy.predictor(tiny_mlp, device="cpu").run(x)[0], rtol=1e-6)


def test_auto_skips_a_falling_back_candidate(silent_gpu_site, tiny_mlp):
    with plugins_on_path(silent_gpu_site):
        p = hwdeploy.predictor(tiny_mlp, device="auto")
    receipt = p.receipt()
    assert receipt.actual == "cpu:0" and receipt.selected == "cpu:0" and not receipt.fell_back
    assert any(s.startswith("gpu:0") and "runs on cpu:0" in s for s in receipt.auto_skipped)
