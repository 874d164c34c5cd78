"""Fixtures of the webgl plugin tests: the Paddle.js runtime, Chromium, the small test models, the CPU reference.

The browser tests run for real (Debian's Chromium + Paddle.js from npm): a
missing piece is a test *error* with the set-up command, never a skip.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hwdeploy

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # webgl_model_inputs, webgl_testlib

from webgl_model_inputs import INPUTS, SPECIAL  # noqa: E402


@pytest.fixture(scope="session")
def paddlejs_assets():
    """The pinned Paddle.js bundles, installed from npm on first use (``hwdeploy webgl-setup``)."""
    from hwdeploy_webgl import assets

    try:
        return assets.install()
    except assets.AssetsError as exc:
        pytest.fail(f"Paddle.js runtime unavailable ({exc}); run `hwdeploy webgl-setup` with the npm registry"
                    " reachable")


@pytest.fixture(scope="session")
def chromium():
    from hwdeploy_webgl.browser import find_chromium

    path = find_chromium()
    if not path:
        pytest.fail("Chromium not found: apt-get install -y chromium (or set $HWDEPLOY_CHROMIUM)")
    return path


@pytest.fixture(scope="session")
def webgl_ready(paddlejs_assets, chromium):
    """Everything a webgl predictor needs, and the device reported as available."""
    device = [d for d in hwdeploy.devices(refresh=True) if d.kind == "webgl"]
    assert device and device[0].available, f"webgl:0 not available: {device[0].reason if device else 'no device'}"
    return device[0]


@pytest.fixture(scope="session")
def small_models(tmp_path_factory) -> dict[str, Path]:
    """Every model of webgl_models.py, saved as PIR (one Paddle process for all of them)."""
    out = tmp_path_factory.mktemp("webgl_models")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    proc = subprocess.run([sys.executable, str(HERE / "webgl_models.py"), str(out)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: out / name for name in [*INPUTS, *SPECIAL]}


@pytest.fixture(scope="module")
def warm_browser(webgl_ready, small_models):
    """Keep one page open for the module, so the other predictors reuse the running Chromium."""
    with hwdeploy.predictor(small_models["extras"], device="webgl", allow_software_renderer=True) as keeper:
        yield keeper
