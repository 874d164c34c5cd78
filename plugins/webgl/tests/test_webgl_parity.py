"""Paddle.js in Chromium against the CPU reference, fp32, on models covering every op the converter lowers."""

import json
import shutil

import numpy as np
import pytest

import hwdeploy
from hwdeploy.errors import InputError
from hwdeploy.contract.records import Artifact
from hwdeploy_webgl.predictor import WebGLPredictor
from webgl_testlib import assert_parity, cpu_reference, model_input
from webgl_model_inputs import INPUTS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_parity_with_cpu_reference(warm_browser, small_models, name):
    x = model_input(name, batch=2, seed=0)
    x2 = model_input(name, batch=1, seed=1)
    ref, ref2 = cpu_reference(small_models[name], x)[0], cpu_reference(small_models[name], x2)[0]
    with hwdeploy.predictor(small_models[name], device="webgl", allow_software_renderer=True) as p:
        assert p.device.id == "webgl:0"
        out = p.run(x)[0]  # batch 2 on a batch-1 model: two runs
        assert_parity(out, ref)
        assert_parity(p.run(x2)[0], ref2)  # new inputs really reach the shaders


def test_relu6_threshold_matters(warm_browser, small_models, tmp_path):
    """A relu6 op without the threshold the converter adds (Paddle 3 writes none) gives wrong numbers, no error."""
    model = small_models["relu6_conv"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    ref = cpu_reference(model, x)[0]
    assert (ref == 6.0).mean() > 0.2  # the clipping is exercised
    artifact = hwdeploy.convert(model, "webgl")
    device = warm_browser.device
    with WebGLPredictor(hwdeploy.load_model(model), device, {"allow_software_renderer": True},
                        artifact=artifact) as p:
        assert_parity(p.run(x)[0], ref)
    broken = tmp_path / "no_threshold"
    shutil.copytree(artifact.directory, broken)
    graph = json.loads((broken / "model.json").read_text())
    # What a converter copying Paddle 3's attributes writes: a standalone relu6 op without a threshold.
    conv = next(op for op in graph["ops"] if "relu6" in op["attrs"].get("fuse_opt", {}))
    del conv["attrs"]["fuse_opt"]
    out = conv["outputs"]["Out"][0]
    conv["outputs"]["Out"] = ["pre_relu6"]
    graph["vars"]["pre_relu6"] = dict(graph["vars"][out], name="pre_relu6")
    graph["ops"].insert(graph["ops"].index(conv) + 1, {"type": "relu6", "inputs": {"X": ["pre_relu6"]},
                                                       "outputs": {"Out": [out]}, "attrs": {}})
    (broken / "model.json").write_text(json.dumps(graph))
    with WebGLPredictor(hwdeploy.load_model(model), device, {"allow_software_renderer": True},
                        artifact=Artifact.load(broken)) as p:
        wrong = p.run(x)[0]
    assert not np.allclose(wrong, ref, rtol=1e-2, atol=1e-2)


def test_converted_batch_and_batch_splitting(warm_browser, small_models):
    x = model_input("conv_basics", batch=4)
    ref = cpu_reference(small_models["conv_basics"], x)[0]
    with hwdeploy.predictor(small_models["conv_basics"], device="webgl", allow_software_renderer=True, batch=2) as p:
        assert p.inputs[0].shape == (-1, 3, 12, 12)
        assert_parity(p.run(x)[0], ref)  # two runs of the batch-2 model
        with pytest.raises(InputError, match="multiple of 2"):
            p.run(x[:3])


def test_input_shape_for_dynamic_dims(warm_browser, small_models):
    x = np.random.default_rng(3).standard_normal((1, 3, 10, 7)).astype("float32")
    ref = cpu_reference(small_models["dynamic_hw"], x)[0]
    with hwdeploy.predictor(small_models["dynamic_hw"], device="webgl", allow_software_renderer=True,
                            input_shape=[1, 3, 10, 7]) as p:
        assert_parity(p.run(x)[0], ref)
        with pytest.raises(InputError):
            p.run(np.zeros((1, 3, 9, 7), "float32"))
