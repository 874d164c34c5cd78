"""precision="int8" (NNCF) and "bf16" on OpenVINO, judged on the trained zoo model digits_cnn (its held-out test split)."""

import numpy as np
import pytest

import hwdeploy
from hwdeploy import zoo
from hwdeploy.errors import BackendError, ConversionError, FallbackError, OptionError
from hwdeploy.sdk import calibration as calib
from hwdeploy.sdk.hostinfo import int8_saturates
from hwdeploy.sdk.testing import bad_calibrations, logits_of, top1_accuracy

import hwdeploy_openvino.predictor as ov_predictor
from hwdeploy_openvino import int8
from hwdeploy_openvino.predictor import OvPredictor


@pytest.fixture(scope="module")
def digits():
    return zoo.get("digits_cnn")


@pytest.fixture(scope="module")
def fp32_logits(digits):
    x, _ = digits.test_split()
    with hwdeploy.predictor(digits.model, "cpu", backend="openvino", threads=1) as p:
        return logits_of(p, x)


def openvino_cpu():
    return next(d for d in hwdeploy.devices() if d.backend == "openvino" and d.kind == "cpu")


def layers_in(receipt, precisions):
    return sum(op.count for op in receipt.ops if op.op.endswith(tuple(f"[{p}]" for p in precisions)))


def test_int8_keeps_accuracy_and_agrees_with_fp32(digits, fp32_logits):
    x, y = digits.test_split()
    with hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="int8", threads=1) as p:
        logits = logits_of(p, x)
        receipt = p.receipt()
    fp32_acc, int8_acc = top1_accuracy(fp32_logits, y), top1_accuracy(logits, y)
    assert fp32_acc >= 0.90
    assert int8_acc >= fp32_acc - 0.01, (fp32_acc, int8_acc)
    assert float((logits.argmax(axis=1) == fp32_logits.argmax(axis=1)).mean()) >= 0.99
    assert not np.allclose(logits, fp32_logits, rtol=1e-4, atol=1e-4)  # really quantized, not fp32 again
    # The receipt names the precision that ran, read back layer by layer from the compiled model.
    assert receipt.options["precision"] == "int8" and not receipt.fallback_evidence
    assert layers_in(receipt, ("i8", "u8")) > 0 and layers_in(receipt, ("bf16", "f16")) == 0
    assert any(e.startswith("precision: int8 executed (") and "in u8" in e for e in receipt.evidence)


def test_the_int8_ir_is_cached_by_model_and_calibration(digits):
    conversion = calib.conversion_options(digits.model, digits.calibration_split(), "test")
    conversion["overflow_fix"] = int8_saturates()  # what the predictor asks for on this CPU
    first = hwdeploy.convert(digits.model, int8.TARGET, **conversion)
    again = hwdeploy.convert(digits.model, int8.TARGET, **conversion)
    assert again.cached and again.path() == first.path()
    assert first.metadata["fake_quantize_ops"] > 0 and first.metadata["quantizer"].startswith("nncf ")
    assert first.metadata["overflow_fix"] == ("enable" if conversion["overflow_fix"] else "first_layer")
    assert first.metadata["calibration_sha256"] == conversion["calibration_sha256"]
    with hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="int8", threads=1) as p:
        assert p.receipt().options["precision"] == "int8"  # the zoo default is the same calibration split
        assert (f"quantized by {first.metadata['quantizer']} (performance preset, overflow fix"
                f" {first.metadata['overflow_fix']}, calibration sha256 {conversion['calibration_sha256'][:12]})"
                in p.receipt().evidence)
    other = calib.conversion_options(digits.model, digits.calibration_split()[:32], "test")
    assert hwdeploy.convert(digits.model, int8.TARGET, **other).path() != first.path()
    with pytest.raises(OptionError, match="sha256"):
        hwdeploy.convert(digits.model, int8.TARGET, calibration=conversion["calibration"],
                         calibration_sha256=other["calibration_sha256"])


@pytest.mark.parametrize("bad, error, match", bad_calibrations("x", (1, 32, 32)))
def test_bad_calibration_is_refused_before_nncf_runs(digits, monkeypatch, bad, error, match):
    def no_quantizer(*args, **kwargs):
        raise AssertionError("NNCF ran")

    monkeypatch.setattr(int8, "run_probe", no_quantizer)
    with pytest.raises(error, match=match):
        hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="int8", calibration=bad)


def test_user_models_need_calibration_and_fp32_takes_none(digits):
    mlp = zoo.get("mlp")
    with pytest.raises(OptionError, match="needs calibration"):
        hwdeploy.predictor(mlp.model, "cpu", backend="openvino", precision="int8")
    with pytest.raises(OptionError, match="only used with precision='int8'"):
        hwdeploy.predictor(digits.model, "cpu", backend="openvino", calibration=digits.calibration_split())
    with pytest.raises(OptionError, match="precision"):
        hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="fp16")


def test_a_quantizer_failure_is_a_conversion_error_naming_the_step(digits, monkeypatch):
    real = int8.run_probe

    def on_a_missing_ir(target, args, **kwargs):  # the child really runs, and really fails
        return real(target, ["/nonexistent/model.xml", *args[1:]], **kwargs)

    monkeypatch.setattr(int8, "run_probe", on_a_missing_ir)
    calibration = digits.calibration_split()[:24]  # data no other test uses: not in the cache
    with pytest.raises(ConversionError, match="nncf.quantize"):
        hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="int8", calibration=calibration)


def test_int8_over_an_ir_without_quantization_is_a_fallback(digits):
    fp32_ir = hwdeploy.convert(digits.model, "openvino")
    p = OvPredictor(digits.model, openvino_cpu(), fp32_ir.path(), threads=1, precision="int8")
    receipt = p.receipt()
    assert receipt.options["precision"] == "fp32"
    assert any("int8 was asked but no layer runs in i8/u8" in e for e in receipt.fallback_evidence)
    assert receipt.fallback_reasons()
    p.close()


def bf16_or_skip(model):
    """On a CPU without bf16, check that bf16 is refused up front with the reason, then skip (hardware we lack)."""
    reason = ov_predictor.bf16_unsupported()
    if reason:
        with pytest.raises(BackendError, match="precision='bf16': OpenVINO's CPU plugin has no bf16 on this CPU"):
            hwdeploy.predictor(model, "cpu", backend="openvino", precision="bf16", threads=1)
        pytest.skip(reason)


def test_bf16_keeps_accuracy_and_the_receipt_counts_bf16_layers(digits, fp32_logits):
    bf16_or_skip(digits.model)
    x, y = digits.test_split()
    with hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="bf16", threads=1) as p:
        logits = logits_of(p, x)
        receipt = p.receipt()
    assert top1_accuracy(logits, y) >= top1_accuracy(fp32_logits, y) - 0.01
    assert not np.allclose(logits, fp32_logits, rtol=1e-5, atol=1e-5)  # bf16 really ran
    assert receipt.options["precision"] == "bf16" and not receipt.fallback_evidence
    assert layers_in(receipt, ("bf16",)) > 0


def test_bf16_that_silently_stays_fp32_is_refused(digits, monkeypatch):
    # A CPU plugin that claims bf16 but ignores the hint: bf16 asked, everything compiled in f32.
    monkeypatch.setattr(ov_predictor, "bf16_unsupported", lambda: "")
    monkeypatch.setitem(ov_predictor.PRECISIONS, "bf16", "f32")
    with pytest.raises(FallbackError, match="bf16 was asked but no layer runs in bf16"):
        hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="bf16", threads=1)
    p = hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="bf16", fallback="allow", threads=1)
    assert p.receipt().options["precision"] == "fp32"


def test_bf16_on_a_cpu_without_bf16_is_refused_before_any_conversion(digits, monkeypatch):
    monkeypatch.setattr(ov_predictor, "bf16_unsupported", lambda: "no bf16 on this test CPU")
    monkeypatch.setattr(hwdeploy, "convert", lambda *a, **k: pytest.fail("converted before refusing bf16"))
    with pytest.raises(BackendError, match="openvino backend: precision='bf16': no bf16 on this test CPU"):
        hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="bf16", fallback="allow", threads=1)


def test_int8_that_silently_goes_bf16_is_refused(digits, monkeypatch):
    # OpenVINO's own default on AMX/AVX512-BF16 CPUs: the layers NNCF left unquantized would run in bf16.
    bf16_or_skip(digits.model)
    monkeypatch.setitem(ov_predictor.PRECISIONS, "int8", "bf16")
    with pytest.raises(FallbackError, match="int8 was asked but OpenVINO compiled with INFERENCE_PRECISION_HINT=bf16"):
        hwdeploy.predictor(digits.model, "cpu", backend="openvino", precision="int8", threads=1)


def test_the_command_line_runs_int8_with_calibration_data(digits, tmp_path, capfd):
    import json

    from hwdeploy import cli

    good = tmp_path / "calibration.npz"
    np.savez(good, x=digits.calibration_split())
    assert cli.main(["run", "zoo:digits_cnn", "--device", "cpu", "--option", "backend=openvino", "--repeat", "1",
                     "--precision", "int8", "--calibration", str(good), "--json"]) == 0
    receipt = json.loads(capfd.readouterr().out)["receipt"]
    assert receipt["backend"] == "openvino" and receipt["options"]["precision"] == "int8"
