import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MLP_SOURCE = textwrap.dedent('''
    import sys
    import numpy as np
    import paddle

    paddle.seed(7)

    class MLP(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc1 = paddle.nn.Linear(8, 32)
            self.fc2 = paddle.nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(paddle.nn.functional.relu(self.fc1(x)))

    layer = MLP()
    for p in layer.parameters():  # unit-scale outputs
        p.set_value((np.random.default_rng(0).standard_normal(p.shape) / np.sqrt(max(p.shape[0], 1))).astype("float32"))
    layer.eval()
    paddle.jit.save(layer, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 8], "float32", "x")])
''')


def build_model(source: str, prefix: Path) -> Path:
    """Run a model-saving script (``sys.argv[1]`` is the prefix) in a subprocess: the test process stays Paddle-free."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    script = prefix.parent / "build_model.py"  # dy2static reads the layer's source: it must live in a file
    script.write_text(source)
    subprocess.run([sys.executable, str(script), str(prefix)], check=True, capture_output=True, timeout=120)
    script.unlink()
    return prefix


def build_tiny_mlp(prefix: Path) -> Path:
    """A small PIR MLP (x: [-1, 8] float32 -> [-1, 4])."""
    return build_model(MLP_SOURCE, prefix)


@pytest.fixture(scope="session")
def tiny_mlp(tmp_path_factory) -> Path:
    """Directory holding model.json + model.pdiparams of a small MLP."""
    directory = tmp_path_factory.mktemp("tiny_mlp")
    build_tiny_mlp(directory / "model")
    return directory


@pytest.fixture(scope="session")
def model_builder():
    """``build(source, prefix)``: save a model from a script in a subprocess (see :func:`build_model`)."""
    return build_model
