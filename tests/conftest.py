import textwrap
from pathlib import Path

import pytest

from hwdeploy.sdk.testing import build_model

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
    """``build(source, prefix)``: save a model from a script in a subprocess (:func:`hwdeploy.sdk.testing.build_model`)."""
    return build_model
