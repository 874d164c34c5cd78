"""The CPU reference backend through hwdeploy.predictor, against Paddle Inference used directly."""

import json
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hwdeploy
from hwdeploy import InputError, Receipt
from hwdeploy.sdk.testing import UPSAMPLE_NEAREST, rel_l2


@pytest.fixture(scope="module")
def mlp(tiny_mlp):
    return hwdeploy.predictor(tiny_mlp, device="cpu")


def raw_paddle_outputs(model_dir, x):
    import paddle.inference as pi

    config = pi.Config(str(model_dir / "model.json"), str(model_dir / "model.pdiparams"))
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def test_matches_paddle_inference_directly(mlp, tiny_mlp):
    x = np.random.default_rng(0).standard_normal((5, 8)).astype("float32")
    assert rel_l2(mlp.run(x)[0], raw_paddle_outputs(tiny_mlp, x)) <= 1e-5


def test_io_description(mlp):
    assert mlp.input_names == ["x"]
    assert mlp.inputs[0].shape == (-1, 8) and mlp.inputs[0].dtype == "float32"
    assert mlp.outputs[0].dtype == "float32" and mlp.outputs[0].shape[-1] == 4
    assert mlp.device.id == "cpu:0"


def test_positional_dict_and_keyword_inputs_agree(mlp):
    x = np.random.default_rng(1).standard_normal((2, 8)).astype("float32")
    a, b, c = mlp.run(x)[0], mlp.run({"x": x})[0], mlp.run(x=x)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_non_contiguous_input_is_accepted(mlp):
    x = np.random.default_rng(2).standard_normal((8, 4)).astype("float32").T  # (4, 8), Fortran order
    np.testing.assert_allclose(mlp.run(x)[0], mlp.run(np.ascontiguousarray(x))[0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9),
       dtype=st.sampled_from(["float32", "float64", "int32", "int64", "float16", "bool"]))
def test_any_wrong_input_is_a_clear_input_error(mlp, shape, dtype):
    x = np.ones(shape, dtype)
    good = dtype == "float32" and len(shape) == 2 and shape[1] == 8 and shape[0] > 0
    if good:
        assert mlp.run(x)[0].shape == (shape[0], 4)
        return
    with pytest.raises(InputError) as info:
        mlp.run(x)
    assert "'x'" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_rejected(mlp, bad):
    x = np.zeros((3, 8), "float32")
    x[2, 5] = bad
    with pytest.raises(InputError, match=r"NaN/Inf.*\(2, 5\)"):
        mlp.run(x)


def test_huge_finite_values_are_not_mistaken_for_nan(mlp):
    x = np.full((2, 8), 3e38, "float32")  # the sum overflows to inf, the values are finite
    out, = mlp.run(x)  # accepted: the finiteness check must not sum the input
    assert out.shape == (2, 4)


def test_wrong_input_count_and_names(mlp):
    x = np.ones((1, 8), "float32")
    with pytest.raises(InputError, match="takes 1 input"):
        mlp.run(x, x)
    with pytest.raises(InputError, match="unknown"):
        mlp.run({"y": x})
    with pytest.raises(InputError, match="not both"):
        mlp.run(x, x=x)


def test_clones_in_threads_match_one_predictor(mlp):
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((4, 8)).astype("float32") for _ in range(8)]
    expected = [mlp.run(b)[0] for b in batches]
    results = {}

    def work(i):
        clone = mlp.clone()
        results[i] = [clone.run(b)[0] for b in batches]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        for got, want in zip(results[i], expected):
            np.testing.assert_array_equal(got, want)
    assert mlp.clone().receipt().plugin == "cpu"


def test_receipt_is_json_and_truthful(mlp, tiny_mlp):
    receipt = mlp.receipt()
    data = json.loads(receipt.to_json())
    assert data["requested"] == "cpu" and data["selected"] == "cpu:0" and data["actual"] == "cpu:0"
    assert data["plugin"] == "cpu" and data["runtime_versions"]["paddlepaddle"].startswith("3.")
    assert data["model"]["sha256"] == hwdeploy.load_model(tiny_mlp).sha256
    assert data["fallback_reasons"] == []
    assert Receipt.from_dict(data).to_dict() == {**data, "fallback_reasons": []}


def test_auto_picks_cpu_here_and_says_so(tiny_mlp, caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="hwdeploy"):  # routine news is DEBUG: a library is quiet
        p = hwdeploy.predictor(tiny_mlp)  # device="auto"
    assert p.device.kind == "cpu"
    assert p.receipt().requested == "auto" and p.receipt().selected == "cpu:0"
    assert any("chose cpu:0" in r.getMessage() for r in caplog.records)


def test_unknown_option_is_rejected(tiny_mlp):
    with pytest.raises(hwdeploy.OptionError, match="unknown option.*colour"):
        hwdeploy.predictor(tiny_mlp, device="cpu", colour="blue")
    with pytest.raises(hwdeploy.OptionError, match="threads"):
        hwdeploy.predictor(tiny_mlp, device="cpu", threads=0)


def test_bad_fallback_policy(tiny_mlp):
    with pytest.raises(ValueError, match="fallback"):
        hwdeploy.predictor(tiny_mlp, device="cpu", fallback="maybe")


UPSAMPLE = UPSAMPLE_NEAREST  # conv + nearest resize: the PIR op oneDNN cannot run on Paddle 3.3


NO_WEIGHTS = '''
import sys, paddle
class Double(paddle.nn.Layer):
    def forward(self, x):
        return paddle.nn.functional.relu(x) * 2.0
m = Double()
m.eval()
paddle.jit.save(m, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 4], "float32", "x")])
'''


def test_upsampling_model_keeps_onednn_without_its_placement_pass_and_says_why(tmp_path, model_builder):
    from hwdeploy.sdk import paddle_kernels

    model_builder(UPSAMPLE, tmp_path / "up" / "model")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32")
    p = hwdeploy.predictor(tmp_path / "up", device="cpu")
    with paddle_kernels.capture_lock, paddle_kernels.capture_kernel_program() as dump:
        got = p.run(x)[0]
    assert got.shape == (2, 4, 16, 16)
    assert any("oneDNN without its placement pass" in e and "nearest_interp" in e for e in p.receipt().evidence)
    # Where the kernels really ran: the convolution on oneDNN, the resize on its CPU kernel.
    if dump.records is not None:  # None only if this process's Paddle ran before the dump site was registered
        backends = {r.kernel: r.backend for r in dump.records}
        assert backends["nearest_interp"] == "CPU" and "ONEDNN" in {b for k, b in backends.items() if "conv" in k}
    # The same numbers as Paddle's native kernels (oneDNN off).
    with hwdeploy.predictor(tmp_path / "up", device="cpu", onednn=False) as native:
        assert rel_l2(got, native.run(x)[0]) <= 1e-5
    # The Paddle bug this works around: forcing oneDNN's full placement fails at run time (a clear error).
    forced = hwdeploy.predictor(tmp_path / "up", device="cpu", onednn=True)
    with pytest.raises(hwdeploy.BackendError, match="ConvertPirAttribute2RuntimeAttribute"):
        forced.run(x)


def test_model_without_weights_has_no_parameter_file_and_still_loads(tmp_path, model_builder):
    model_builder(NO_WEIGHTS, tmp_path / "double" / "model")
    assert not (tmp_path / "double" / "model.pdiparams").exists()
    p = hwdeploy.predictor(tmp_path / "double", device="cpu")
    np.testing.assert_array_equal(p.run(np.array([[-1, 0.5, 2, -3]], "float32"))[0], [[0, 1, 4, 0]])
