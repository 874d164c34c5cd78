"""Fixtures for the Paddle Lite plugin tests.

The Lite environment (CPython 3.10 + paddlelite 2.13rc0 in hwdeploy's cache) is created on first
use through the plugin's own set-up function, as ``hwdeploy lite-setup`` would: about 10 s with a
warm pip cache. Tests run Lite for real (x86 kernels here); ARM hardware tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A model with an op Paddle Lite has no kernel for anywhere (cumprod), exported in both formats.
CUMPROD_MODEL = textwrap.dedent('''
    import os, sys
    out, fmt = sys.argv[1], sys.argv[2]
    if fmt == "legacy":
        os.environ["FLAGS_enable_pir_api"] = "0"
    import numpy as np
    import paddle

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(8, 4)

        def forward(self, x):
            return paddle.cumprod(paddle.nn.functional.relu(self.fc(x)), dim=1)

    paddle.seed(0)
    net = Net()
    net.eval()
    paddle.jit.save(net, out, input_spec=[paddle.static.InputSpec([None, 8], "float32", "x")])
''')


@pytest.fixture(scope="session")
def lite_python() -> str:
    """The Paddle Lite interpreter: $HWDEPLOY_LITE_PYTHON, an existing env, or one created now."""
    from hwdeploy.api import clear_discovery_cache

    from hwdeploy_arm import env

    found = env.find_lite_python()
    if found is None:
        search = env.search_base_python()
        if search.chosen is None:
            # CI's machine has pyenv's 3.10: not finding it there is a failure, not a skip.
            (pytest.fail if os.environ.get("CI") else pytest.skip)(
                "no CPython 3.10 on this machine to build the Paddle Lite environment from (paddlelite wheels"
                f" exist for CPython <= 3.10 only; {search.explain()}); set HWDEPLOY_LITE_PYTHON")
        env.setup_lite_env(search.chosen)
        found = env.find_lite_python()
    clear_discovery_cache()  # devices() must see the environment now
    return found.path


@pytest.fixture(scope="session")
def zoo_model():
    """``zoo_model(name)`` -> the built zoo model (cached on disk by hwdeploy.zoo)."""
    from hwdeploy import zoo

    return zoo.get


@pytest.fixture(scope="session")
def cumprod_models(tmp_path_factory) -> dict[str, Path]:
    """``{"pir": ..json, "legacy": ..pdmodel}`` of a small model using cumprod (built in subprocesses)."""
    root = tmp_path_factory.mktemp("cumprod")
    script = root / "build.py"  # dy2static reads the layer's source: it must live in a file
    script.write_text(CUMPROD_MODEL)
    env = dict(os.environ, GLOG_minloglevel="2")
    for fmt in ("pir", "legacy"):
        subprocess.run([sys.executable, str(script), str(root / fmt / "net"), fmt], check=True, capture_output=True,
                       timeout=300, env=env)
    return {"pir": root / "pir" / "net.json", "legacy": root / "legacy" / "net.pdmodel"}


@pytest.fixture(scope="session")
def lite_x86_nb(lite_python, zoo_model):
    """``lite_x86_nb(name)`` -> (artifact, zoo model): the zoo model converted for Lite's x86 target."""
    import hwdeploy

    def make(name: str):
        z = zoo_model(name)
        return hwdeploy.convert(z.model, "x86"), z

    return make
