"""Fixtures for the NVIDIA plugin tests: tiny real Paddle models (PIR and legacy) and the discovered GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BUILD = textwrap.dedent('''
    import os, sys
    import numpy as np
    out, fmt = sys.argv[1], sys.argv[2]
    if fmt == "legacy":
        os.environ["FLAGS_enable_pir_api"] = "0"  # Paddle 3 writes .pdmodel only with the old IR
    import paddle

    class TinyNet(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc1 = paddle.nn.Linear(8, 16)
            self.fc2 = paddle.nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(paddle.nn.functional.relu(self.fc1(x)))

    layer = TinyNet()
    rng = np.random.default_rng(0)
    for p in layer.parameters():  # unit-scale outputs, so parity means something
        p.set_value((rng.standard_normal(p.shape) / np.sqrt(p.shape[0])).astype("float32"))
    layer.eval()
    paddle.jit.save(layer, out, input_spec=[paddle.static.InputSpec([None, 8], "float32", "x")])
''')


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """``{"pir": .../tiny.json, "legacy": .../tiny.pdmodel}``: x [-1, 8] float32 -> [-1, 4], built in a subprocess."""
    root = tmp_path_factory.mktemp("nvidia-models")
    script = root / "build_tiny.py"  # dy2static reads the layer's source: it must live in a file
    script.write_text(BUILD)
    env = dict(os.environ, GLOG_minloglevel="2")
    for fmt in ("pir", "legacy"):
        subprocess.run([sys.executable, str(script), str(root / fmt / "tiny"), fmt], check=True, capture_output=True,
                       timeout=300, env=env)
    return {"pir": root / "pir" / "tiny.json", "legacy": root / "legacy" / "tiny.pdmodel"}


@pytest.fixture(scope="session")
def nvidia_gpu():
    """The ``gpu`` device the nvidia plugin reports (available or not), from real discovery."""
    import hwdeploy

    found = [d for d in hwdeploy.devices() if d.plugin == "nvidia"]
    assert found, "the nvidia plugin reported no gpu device at all (is hwdeploy-nvidia installed?)"
    return found[0]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty hwdeploy cache dir for this test."""
    path = tmp_path / "hwdeploy-cache"
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def paddle_build() -> dict:
    """How the installed Paddle was built, from the plugin's own isolated probe (this process stays Paddle-free)."""
    from hwdeploy.sdk.isolation import run_probe

    probe = run_probe("hwdeploy_nvidia.probes:paddle_info", timeout=120, cache_ttl=3600)
    assert probe.ok, probe.error
    return probe.value


@pytest.fixture(scope="session")
def cpu_only_paddle(paddle_build) -> dict:
    """Skip unless the installed Paddle is a CPU-only build (the case these tests prove things about)."""
    build = paddle_build
    if build["cuda_build"]:
        pytest.skip("this Paddle is a CUDA build: the CPU-wheel fallback cannot happen here")
    return build
