"""precision="int8" on the Paddle Inference reference backend: Paddle's own post-training quantization of the
legacy program, run on oneDNN int8, judged on the trained zoo model digits_cnn; and why PIR programs are refused."""

from pathlib import Path

import numpy as np
import pytest

import hwdeploy
from hwdeploy import zoo
from hwdeploy.builtin import cpu_int8
from hwdeploy.errors import FallbackError, OptionError
from hwdeploy.sdk import calibration as calib
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.testing import assert_clones_agree, bad_calibrations, logits_of, top1_accuracy


@pytest.fixture(scope="module")
def digits():
    return zoo.get("digits_cnn")


@pytest.fixture(scope="module")
def int8_predictor(digits):
    with hwdeploy.predictor(digits.model, "cpu", precision="int8", threads=1) as p:
        yield p


def test_int8_keeps_accuracy_and_the_receipt_says_what_ran(digits, int8_predictor):
    x, y = digits.test_split()
    with hwdeploy.predictor(digits.model, "cpu", threads=1) as fp32:
        reference = logits_of(fp32, x)
    logits = logits_of(int8_predictor, x)
    assert top1_accuracy(logits, y) >= top1_accuracy(reference, y) - 0.01
    assert float((logits.argmax(1) == reference.argmax(1)).mean()) >= 0.99
    assert not np.allclose(logits, reference, rtol=1e-4, atol=1e-4)  # really quantized
    receipt = int8_predictor.receipt()
    assert receipt.options["precision"] == "int8" and not receipt.fallback_evidence
    # Evidence from Paddle itself: its int8 pass's own count, and the ops whose outputs were int8 in a probe run.
    passes = next(e for e in receipt.evidence if e.startswith("precision: Paddle's oneDNN int8 pass quantized"))
    assert "fused_conv2d ops" in passes
    probe = next(e for e in receipt.evidence if e.startswith("precision: ops with int8/uint8 outputs"))
    assert "fused_conv2d x" in probe


def test_clones_of_an_int8_predictor_run_in_threads_like_the_original(digits, int8_predictor):
    # Paddle's own clone() breaks oneDNN int8 (shared weights re-laid out); hwdeploy's clone is a fresh predictor.
    x, _ = digits.test_split()
    assert_clones_agree(int8_predictor, [x[:3]])
    assert_clones_agree(int8_predictor, [x[:8]], clones=2, runs=5)  # a new batch size after the clones ran


def test_the_int8_program_is_cached_by_model_and_calibration(digits):
    legacy = cpu_int8.legacy_of(digits.model)
    conversion = calib.conversion_options(legacy, digits.calibration_split(), "test")
    first = hwdeploy.convert(legacy, cpu_int8.TARGET, **conversion)
    again = hwdeploy.convert(legacy, cpu_int8.TARGET, **conversion)
    assert again.cached and again.path() == first.path() and first.metadata["quantize_ops"] > 0
    other = calib.conversion_options(legacy, digits.calibration_split()[:32], "test")
    assert hwdeploy.convert(legacy, cpu_int8.TARGET, **other).path() != first.path()


@pytest.mark.parametrize("bad, error, match", bad_calibrations("x", (1, 32, 32)))
def test_bad_calibration_is_refused_before_paddle_quantizes(digits, monkeypatch, bad, error, match):
    def no_quantizer(*args, **kwargs):
        raise AssertionError("the quantizer ran")

    monkeypatch.setattr(cpu_int8, "run_probe", no_quantizer)
    with pytest.raises(error, match=match):
        hwdeploy.predictor(digits.model, "cpu", precision="int8", calibration=bad)


def test_int8_that_runs_no_int8_op_is_refused(digits, monkeypatch):
    from collections import Counter

    monkeypatch.setattr(cpu_int8, "ops_with_outputs", lambda *args: Counter())  # as if Paddle had stayed in fp32
    with pytest.raises(FallbackError, match="no op produced int8/uint8 outputs"):
        hwdeploy.predictor(digits.model, "cpu", precision="int8", threads=1)
    p = hwdeploy.predictor(digits.model, "cpu", precision="int8", threads=1, fallback="allow")
    assert p.receipt().options["precision"] == "fp32"


def test_a_pir_program_without_a_legacy_export_is_refused_with_the_reason(tiny_mlp):
    model = hwdeploy.load_model(tiny_mlp / "model.json")
    calibration = np.ones((8, 8), np.float32)
    with pytest.raises(OptionError, match="needs the model as a legacy .pdmodel program.*PIR"):
        hwdeploy.predictor(model, "cpu", precision="int8", calibration=calibration)
    with pytest.raises(OptionError, match="only used with precision='int8'"):
        hwdeploy.predictor(model, "cpu", calibration=calibration)


def pir_post_training_quantization(program: str, params: str) -> str:
    """In the child: what Paddle's static post-training quantization does with a PIR program."""
    import os

    import paddle
    from paddle.static.quantization import PostTrainingQuantization

    paddle.enable_static()
    rows = [{"x": np.ones((4, 1, 32, 32), np.float32)}]
    ptq = PostTrainingQuantization(executor=paddle.static.Executor(paddle.CPUPlace()),
                                   model_dir=os.path.dirname(program), model_filename=os.path.basename(program),
                                   params_filename=os.path.basename(params), data_loader=lambda: iter(rows),
                                   batch_nums=1, algo="abs_max", onnx_format=True)
    ptq.quantize()
    return "quantized"


def test_why_pir_is_refused_is_what_paddle_does(digits):
    """The refusal's reason, observed: Paddle's post-training quantization fails on the PIR program, and
    enable_onednn_int8 on a PIR program runs no int8 op (Paddle's output hook sees only float outputs)."""
    import os

    here = str(Path(__file__).parent)  # the child imports this module
    result = run_probe(f"{__name__}:pir_post_training_quantization",
                       [str(digits.model.program), str(digits.model.params)], timeout=300,
                       env={"PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)})
    assert not result.ok and "AssertionError" in result.error + result.stderr_tail, result
    from hwdeploy.sdk import paddle_inference as pi

    config = pi.make_config(digits.model, threads=1, onednn=True, optim_cache=False)
    config.enable_onednn_int8()
    assert cpu_int8.ops_with_outputs(digits.model, config, ("paddle.int8", "paddle.uint8")) == {}


def test_a_program_paddle_s_int8_kernels_cannot_run_is_a_backend_error_at_creation():
    """digits_resnet's global average pooling has no oneDNN int8 primitive in Paddle 3.3.1 ("could not create a
    descriptor for a pooling forward propagation primitive"): refused when the predictor is made, never at run."""
    resnet = zoo.get("digits_resnet")
    try:
        p = hwdeploy.predictor(resnet.model, "cpu", precision="int8", threads=1)
    except hwdeploy.BackendError as exc:
        assert "Paddle's oneDNN kernels cannot run" in str(exc) and "pooling" in str(exc)
    else:  # a later Paddle that can: then it must be real int8 and right
        x, y = resnet.test_split()
        assert p.receipt().options["precision"] == "int8"
        assert top1_accuracy(logits_of(p, x), y) >= resnet.test_accuracy - 0.01


def test_bf16_runs_oneDNN_bfloat16_kernels_and_keeps_accuracy(digits):
    from hwdeploy.sdk import paddle_inference as pi

    unsupported = pi.bf16_unsupported()
    if unsupported:  # this machine's CPU (no AVX-512): refused up front with the reason, never run as fp32
        with pytest.raises(hwdeploy.BackendError, match="no bfloat16 support in oneDNN"):
            hwdeploy.predictor(digits.model, "cpu", precision="bf16", threads=1)
        pytest.skip(f"bf16 kernels need AVX-512 ({unsupported}); the refusal was checked")
    x, y = digits.test_split()
    with hwdeploy.predictor(digits.model, "cpu", threads=1) as fp32, \
            hwdeploy.predictor(digits.model, "cpu", precision="bf16", threads=1) as bf16:
        reference, logits = logits_of(fp32, x), logits_of(bf16, x)
        receipt = bf16.receipt()
    assert receipt.options["precision"] == "bf16" and not receipt.fallback_evidence
    assert any(e.startswith("precision: ops with bf16 outputs") and "conv2d" in e for e in receipt.evidence)
    assert not np.allclose(logits, reference, rtol=1e-5, atol=1e-5)  # bf16 really ran
    assert top1_accuracy(logits, y) >= top1_accuracy(reference, y) - 0.01


def test_bf16_that_runs_no_bf16_op_is_refused(digits, monkeypatch):
    from collections import Counter

    from hwdeploy.sdk import paddle_inference as pi

    monkeypatch.setattr(cpu_int8, "ops_with_outputs", lambda *args: Counter())
    monkeypatch.setattr(pi, "bf16_unsupported", lambda: "")  # as on a CPU that claims bf16 support
    with pytest.raises(FallbackError, match="bf16 was asked but no op produced bf16 outputs"):
        hwdeploy.predictor(digits.model, "cpu", precision="bf16", threads=1)


def test_the_command_line_quantizes_with_a_calibration_file(digits, tmp_path, capfd):
    import json

    from hwdeploy import cli

    first, renamed = tmp_path / "calibration.npz", tmp_path / "same-data.npz"
    for path in (first, renamed):
        np.savez(path, x=digits.calibration_split()[:48])
    argv = ["convert", "zoo:digits_cnn", "--target", cpu_int8.TARGET, "--json", "--option"]
    assert cli.main(argv + [f"calibration={first}"]) == 0
    artifact = json.loads(capfd.readouterr().out)
    assert artifact["metadata"]["quantize_ops"] > 0 and artifact["metadata"]["calibration_rows"] == 48
    # The cache key follows the data, not the file name: the same rows under another name are the same artifact.
    assert cli.main(argv + [f"calibration={renamed}"]) == 0
    again = json.loads(capfd.readouterr().out)
    assert again["cached"] is True and again["directory"] == artifact["directory"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.full((4, 1, 32, 32), np.nan, np.float32))
    assert cli.main(argv + [f"calibration={bad}"]) == cli.EXIT_FAIL
    assert "InputError" in capfd.readouterr().err
