"""precision="int8" on ONNX Runtime, judged on the trained zoo model digits_cnn (its held-out test split)."""

import json

import numpy as np
import pytest

import hwdeploy
from hwdeploy import zoo
from hwdeploy.errors import ConversionError, OptionError
from hwdeploy.sdk import calibration as calib
from hwdeploy.sdk.hostinfo import int8_saturates
from hwdeploy.sdk.testing import bad_calibrations, logits_of, top1_accuracy
from hwdeploy_onnxruntime import int8
from hwdeploy_onnxruntime.predictor import OrtPredictor


@pytest.fixture(scope="module")
def digits():
    return zoo.get("digits_cnn")


@pytest.fixture(scope="module")
def fp32_logits(digits):
    x, _ = digits.test_split()
    with hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", threads=1) as p:
        return logits_of(p, x)


def test_int8_keeps_accuracy_and_agrees_with_fp32(digits, fp32_logits):
    x, y = digits.test_split()
    with hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", precision="int8", threads=1) as p:
        logits = logits_of(p, x)
        receipt = p.receipt()
    fp32_acc, int8_acc = top1_accuracy(fp32_logits, y), top1_accuracy(logits, y)
    assert fp32_acc >= 0.90 and abs(fp32_acc - digits.test_accuracy) <= 1 / len(y) + 1e-9
    assert int8_acc >= fp32_acc - 0.01, (fp32_acc, int8_acc)
    agreement = float((logits.argmax(axis=1) == fp32_logits.argmax(axis=1)).mean())
    assert agreement >= 0.99
    # Really quantized: the outputs differ from fp32 (by more than fp32 rounding), just not in the decisions.
    assert not np.allclose(logits, fp32_logits, rtol=1e-4, atol=1e-4)
    # The receipt names the executed precision, read back from the session.
    assert receipt.options["precision"] == "int8"
    assert not receipt.fallback_evidence
    line = next(e for e in receipt.evidence if e.startswith("precision: int8 executed"))
    count = int(line.split("(")[1].split()[0])
    assert count > 0
    placed = sum(op.count for op in receipt.ops if int8.is_quantized_op(op.op.removeprefix("onnx::")))
    assert placed == count


def test_fp32_receipt_names_fp32(digits):
    with hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", threads=1) as p:
        receipt = p.receipt()
    assert receipt.options["precision"] == "fp32" and not receipt.fallback_evidence
    assert any(e.startswith("precision: fp32 executed (0 quantized nodes") for e in receipt.evidence)


def test_quantized_artifact_is_cached_by_model_and_calibration(digits):
    calibration = digits.calibration_split()
    path, sha = calib.store_calibration(["x"], [calibration])
    here = int8_saturates()  # what the predictor asks for on this CPU
    first = hwdeploy.convert(digits.model, int8.TARGET, calibration=str(path), calibration_sha256=sha,
                             reduce_range=here)
    again = hwdeploy.convert(digits.model, int8.TARGET, calibration=str(path), calibration_sha256=sha,
                             reduce_range=here)
    assert again.cached and again.path() == first.path()
    assert first.metadata["calibration_sha256"] == sha and first.metadata["quantized_ops"]
    assert first.metadata["reduce_range"] is here
    # The weight range is in the key: an artifact made for a VNNI CPU is never served to one that saturates.
    other_range = hwdeploy.convert(digits.model, int8.TARGET, calibration=str(path), calibration_sha256=sha,
                                   reduce_range=not here)
    assert other_range.path() != first.path() and other_range.metadata["reduce_range"] is (not here)
    # The predictor's default (the zoo's calibration split) lands on the same cached artifact.
    with hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", precision="int8", threads=1) as p:
        assert p._onnx_path == first.path()
    # Other calibration data: another artifact.
    path2, sha2 = calib.store_calibration(["x"], [calibration[:32]])
    other = hwdeploy.convert(digits.model, int8.TARGET, calibration=str(path2), calibration_sha256=sha2)
    assert other.path() != first.path()
    # A hash that does not match the data is refused (the cache key must follow the data).
    with pytest.raises(OptionError, match="sha256"):
        hwdeploy.convert(digits.model, int8.TARGET, calibration=str(path), calibration_sha256=sha2)


def test_calibration_forms_are_equivalent(digits, tmp_path):
    calibration = digits.calibration_split()
    npz = tmp_path / "calib.npz"
    np.savez(npz, x=calibration)
    specs = calib.input_specs(digits.model)
    forms = [calibration, str(npz), npz, [{"x": calibration[i:i + 8]} for i in range(0, 64, 8)],
             [calibration[i:i + 16] for i in range(0, 64, 16)], iter([[calibration]])]
    hashes = {calib.calibration_sha256(["x"], calib.resolve_calibration(digits.model, f, specs)) for f in forms}
    assert len(hashes) == 1


@pytest.mark.parametrize("bad, error, match", bad_calibrations("x", (1, 32, 32)))
def test_bad_calibration_is_refused_before_the_quantizer_runs(digits, monkeypatch, bad, error, match):
    def no_quantizer(*args, **kwargs):
        raise AssertionError("the quantizer ran")

    monkeypatch.setattr(int8, "run_probe", no_quantizer)
    with pytest.raises(error, match=match):
        hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", precision="int8", calibration=bad)


def test_user_models_need_calibration_and_other_precisions_are_refused(digits):
    mlp = zoo.get("mlp")  # random weights: not a trained zoo model, so no default calibration
    with pytest.raises(OptionError, match="needs calibration"):
        hwdeploy.predictor(mlp.model, "cpu", backend="onnxruntime", precision="int8")
    with pytest.raises(OptionError, match="precision"):
        hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", precision="bf16")
    with pytest.raises(OptionError, match="only used with precision='int8'"):
        hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", calibration=digits.calibration_split())
    calibration = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    with hwdeploy.predictor(mlp.model, "cpu", backend="onnxruntime", precision="int8", calibration=calibration,
                            threads=1) as p:
        assert p.receipt().options["precision"] == "int8"
        assert p.run(calibration[:2])[0].shape == (2, 8)


def test_a_bad_calibration_set_gives_a_measurably_worse_model(digits, fp32_logits):
    """All-zero calibration: activation ranges of a blank image clip every real digit. The accuracy check above
    would catch such a model."""
    x, y = digits.test_split()
    zeros = np.zeros((64, 1, 32, 32), np.float32)
    with hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", precision="int8", calibration=zeros,
                            threads=1) as p:
        logits = logits_of(p, x)
        assert p.receipt().options["precision"] == "int8"
    bad_acc = top1_accuracy(logits, y)
    assert bad_acc < top1_accuracy(fp32_logits, y) - 0.05, bad_acc
    assert float((logits.argmax(axis=1) == fp32_logits.argmax(axis=1)).mean()) < 0.99


def test_a_session_that_silently_stays_fp32_is_a_fallback(digits):
    """precision='int8' over a graph without quantized nodes: the receipt says fp32 ran, and policy refuses it."""
    fp32 = hwdeploy.convert(digits.model, "onnx")
    device = next(d for d in hwdeploy.devices() if d.backend == "onnxruntime" and d.kind == "cpu")
    p = OrtPredictor(digits.model, device, fp32.path(), threads=1, options={"precision": "int8"},
                     precision="int8")
    receipt = p.receipt()
    assert receipt.options["precision"] == "fp32"
    assert any("no quantized nodes" in e for e in receipt.fallback_evidence)
    assert receipt.fallback_reasons()
    p.close()


def test_a_quantizer_failure_is_a_conversion_error_naming_the_step(digits, monkeypatch, tmp_path):
    real = int8.run_probe

    def on_a_missing_model(target, args, **kwargs):  # the child really runs, and really fails
        return real(target, [str(tmp_path / "missing.onnx"), *args[1:]], **kwargs)

    monkeypatch.setattr(int8, "run_probe", on_a_missing_model)
    calibration = digits.calibration_split()[:24]  # data no other test uses: not in the cache
    with pytest.raises(ConversionError, match="failed at step quant_pre_process .*missing.onnx"):
        hwdeploy.predictor(digits.model, "cpu", backend="onnxruntime", precision="int8", calibration=calibration)


def test_a_model_with_run_time_shapes_quantizes_and_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """tiny_segmenter resizes to sizes computed at run time: ONNX Runtime's symbolic shape inference gives up
    (and writes sym_shape_infer_temp.onnx + its external data into the working directory). The quantizer then
    uses ONNX's own shape inference, in a child process working in the artifact's directory: the caller's
    directory stays empty, the artifact holds only the model, and the facts say what happened."""
    segmenter = zoo.get("tiny_segmenter")
    monkeypatch.chdir(tmp_path)
    calibration = np.concatenate([segmenter.sample_inputs(8, seed=s)[0] for s in range(2)])
    with hwdeploy.predictor(segmenter.model, "cpu", backend="onnxruntime", precision="int8", fallback="allow",
                            calibration=calibration, threads=1) as p:
        out = p.run(*segmenter.sample_inputs(1, seed=9))[0]
        artifact_dir = p._onnx_path.parent
        receipt = p.receipt()
    assert list(tmp_path.iterdir()) == []
    assert {f.name for f in artifact_dir.iterdir()} == {"artifact.json", "model.onnx", ".hwdeploy-manifest.json"}
    facts = json.loads((artifact_dir / "artifact.json").read_text())["metadata"]
    assert facts["symbolic_shape_inference"].startswith("incomplete: skipped") and facts["quantized_ops"]
    assert receipt.options["precision"] == "int8" and out.shape == (1, 4, 128, 128) and np.isfinite(out).all()


def test_the_command_line_runs_int8_with_calibration_data(digits, tmp_path, capfd):
    import json

    from hwdeploy import cli

    base = ["run", "zoo:digits_cnn", "--device", "cpu", "--option", "backend=onnxruntime", "--repeat", "1", "--json"]
    good = tmp_path / "calibration.npz"
    np.savez(good, x=digits.calibration_split())
    assert cli.main(base + ["--precision", "int8", "--calibration", str(good)]) == 0
    receipt = json.loads(capfd.readouterr().out)["receipt"]
    assert receipt["backend"] == "onnxruntime" and receipt["options"]["precision"] == "int8"
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.full_like(digits.calibration_split()[:4], np.nan))
    assert cli.main(base + ["--precision", "int8", "--calibration", str(bad)]) == cli.EXIT_FAIL
    error = json.loads(capfd.readouterr().out)["error"]
    assert error.startswith("InputError") and "NaN or Inf" in error, error
