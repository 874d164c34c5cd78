"""The OpenVINO plugin through hwdeploy's public API: discovery, IR conversion, parity, precision receipts."""

import numpy as np
import pytest

import hwdeploy
from hwdeploy import zoo
from hwdeploy.errors import FallbackError, InputError, OptionError, UnsupportedOpsError
from hwdeploy.sdk import testing
from hwdeploy.sdk.testing import assert_clones_agree, assert_parity

import hwdeploy_openvino.predictor as ov_predictor


@pytest.fixture(scope="module")
def mlp():
    return zoo.get("mlp")


@pytest.fixture(scope="module")
def mobilenet():
    return zoo.get("mobilenet_v2")


def test_discovery_reports_a_cpu_device_below_the_reference():
    cpu = next(d for d in hwdeploy.devices(refresh=True) if d.backend == "openvino")
    assert cpu.kind == "cpu" and cpu.available, cpu.reason
    assert cpu.plugin == "openvino" and cpu.priority < 0
    assert cpu.versions["openvino"] and cpu.versions["paddle2onnx"]


def test_discovery_imports_neither_openvino_nor_paddle():
    assert testing.modules_imported_by_discovery("openvino", ["openvino", "paddle", "paddle2onnx", "onnx"]) == []


def test_plain_auto_never_picks_the_openvino_device(mlp):
    # Priority -1: "auto" keeps the Paddle Inference reference (or any device with priority >= 0).
    with hwdeploy.predictor(mlp.model, "auto", threads=1) as p:
        assert p.receipt().backend != "openvino"


# tiny_segmenter: run-time-size bilinear resizes; then the op families of PP-LCNet, ShuffleNetV2, DB, CRNN/SVTR
# and PicoDet's distribution-focal head
@pytest.mark.parametrize("name", ["mlp", "mobilenet_v2", "tiny_segmenter", "lcnet_small", "shufflenet_small",
                                  "ocr_detector", "ocr_recognizer", "tiny_detector_raw"])
def test_parity_with_the_cpu_reference(name):
    z = zoo.get(name)
    reference = hwdeploy.predictor(z.model, "cpu", threads=1)
    ov = hwdeploy.predictor(z.model, "cpu", backend="openvino", threads=1)
    for batch in (1, 3):  # the IR keeps the dynamic batch
        assert_parity(reference, ov, z.sample_inputs(batch, seed=5), tol=1e-4)  # and the same names


def test_receipt_shows_device_precision_and_every_layer(mobilenet):
    p = hwdeploy.predictor(mobilenet.model, "cpu", backend="openvino", threads=2)
    receipt = p.receipt()
    assert receipt.backend == "openvino" and receipt.actual == "cpu:0" and receipt.fallback_reasons() == []
    assert any("EXECUTION_DEVICES = ['CPU']" in e and "INFERENCE_PRECISION_HINT = f32" in e for e in receipt.evidence)
    assert receipt.ops_known
    convs = sum(op.count for op in receipt.ops if op.op.startswith("ov::Convolution"))
    assert convs >= 50  # MobileNetV2's 52 convolutions, fused or not, stay convolutions
    assert not [op for op in receipt.ops if op.op.endswith(("[bf16]", "[f16]"))]  # fp32 really means fp32


def test_reduced_precision_is_caught_as_fallback(mlp, monkeypatch):
    # Simulate OpenVINO's CPU default on AMX/AVX512-BF16 machines: fp32 asked, bf16 compiled.
    monkeypatch.setitem(ov_predictor.PRECISIONS, "fp32", "bf16")
    p = hwdeploy.predictor(mlp.model, "cpu", backend="openvino", fallback="allow", threads=1)
    if p.compiled_precision != "bf16":
        pytest.skip("this CPU has no bf16 support: OpenVINO keeps f32 whatever the hint")
    receipt = p.receipt()
    assert any("bf16" in e and "fp32 was asked" in e for e in receipt.fallback_evidence)
    with pytest.raises(FallbackError, match="bf16"):
        hwdeploy.predictor(mlp.model, "cpu", backend="openvino", threads=1)


def test_explicit_bf16_is_not_a_fallback(mlp):
    if ov_predictor.bf16_unsupported():  # refused up front (test_openvino_precision checks how)
        pytest.skip(ov_predictor.bf16_unsupported())
    p = hwdeploy.predictor(mlp.model, "cpu", backend="openvino", precision="bf16", threads=1)
    assert p.receipt().fallback_reasons() == []


def test_conversion_is_cached_and_keeps_fp32_weights(mobilenet):
    first = hwdeploy.convert(mobilenet.model, "openvino")
    second = hwdeploy.convert(mobilenet.model, "openvino")
    assert second.cached and second.directory == first.directory
    assert sorted(first.files) == ["model.bin", "model.xml"]
    weights = first.path("model.bin").stat().st_size
    # fp16 compression (OpenVINO's save_model default) would halve the weights: they must stay fp32-sized.
    assert weights >= 0.9 * mobilenet.model.params.stat().st_size


def test_clones_run_in_threads_with_identical_results(mlp):
    p = hwdeploy.predictor(mlp.model, "cpu", backend="openvino", threads=1)
    assert_clones_agree(p, mlp.sample_inputs(4, seed=2), clones=3, runs=20)


def test_outputs_are_not_overwritten_by_the_next_call(mlp):
    p = hwdeploy.predictor(mlp.model, "cpu", backend="openvino", threads=1)
    a, b = mlp.sample_inputs(2, seed=1), mlp.sample_inputs(2, seed=2)
    first = p.run(*a)[0]
    kept = first.copy()
    p.run(*b)
    assert np.array_equal(first, kept)


def test_inputs_are_validated_before_openvino_sees_them(mlp):
    p = hwdeploy.predictor(mlp.model, "cpu", backend="openvino", threads=1)
    x = mlp.sample_inputs(1)[0]
    with pytest.raises(InputError, match="shape"):
        p.run(x[:, :10])
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(InputError, match="NaN/Inf"):
        p.run(bad)


@pytest.mark.parametrize("options, match", [
    ({"onednn": False}, "unknown option"),
    ({"precision": "int8"}, "precision"),
    ({"hint": "fast"}, "hint"),
    ({"threads": -1}, "threads"),
])
def test_bad_options_are_refused(mlp, options, match):
    with pytest.raises(OptionError, match=match):
        hwdeploy.predictor(mlp.model, "cpu", backend="openvino", **options)


# ---------------------------------------------------------------- the shared ONNX path


@pytest.fixture(scope="module")
def unconvertible(tmp_path_factory):
    """Real models paddle2onnx cannot convert (the same ones the ONNX Runtime plugin's tests use)."""
    return testing.build_onnx_unconvertible(tmp_path_factory.mktemp("unconvertible"))


@pytest.mark.parametrize("model, ops", [("unmapped", testing.ONNX_UNMAPPED_OPS),
                                        ("mapper_fails", testing.ONNX_MAPPER_FAILS_OPS)])
def test_ops_paddle2onnx_cannot_convert_fail_as_for_every_onnx_reader(unconvertible, model, ops):
    """The same UnsupportedOpsError, naming the same ops, as the shared "onnx" target (and so ONNX Runtime)."""
    with pytest.raises(UnsupportedOpsError) as through_openvino:
        hwdeploy.predictor(unconvertible[model], "cpu", backend="openvino")
    with pytest.raises(UnsupportedOpsError) as through_onnx:
        hwdeploy.convert(unconvertible[model], "onnx")
    assert through_openvino.value.ops == through_onnx.value.ops == ops
    assert str(through_openvino.value) == str(through_onnx.value)
    with pytest.raises(UnsupportedOpsError):  # the IR target itself says the same
        hwdeploy.convert(unconvertible[model], "openvino")


def test_a_resize_with_a_float64_scale_runs_with_parity_through_the_fixed_up_export(tmp_path):
    directory = testing.build_model(testing.UPSAMPLE_NEAREST, tmp_path / "up" / "model").parent
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype("float32")
    with hwdeploy.predictor(directory, "cpu", threads=1) as reference, \
            hwdeploy.predictor(directory, "cpu", backend="openvino", threads=1) as ov:
        expected, got = reference.run(x)[0], ov.run(x)[0]
        assert not ov.receipt().fallback_reasons()
    assert got.shape == expected.shape == (2, 4, 16, 16) and testing.rel_l2(got, expected) <= 1e-5
    assert hwdeploy.convert(directory, "onnx").metadata["program_fixups"]


def test_a_matmul_with_a_1d_constant_is_rewritten_as_a_column_so_the_cpu_plugin_compiles_it():
    """PicoDet's distribution-focal decoding, ``(softmax(bins) @ arange(bins)) * stride``: OpenVINO 2026.4's
    MatMulMultiplyFusion throws on the 1-D form; the IR holds the [K, 1] form instead, and says so."""
    ir = hwdeploy.convert(zoo.get("tiny_detector_raw").model, "openvino")
    assert ir.metadata["ir_fixups"] == {"matmul with a 1-D constant as a [K, 1] column": 1}
    assert "ir_fixups" not in hwdeploy.convert(zoo.get("mlp").model, "openvino").metadata  # 2-D weights untouched


def test_the_ir_is_built_from_the_shared_onnx_export_without_exporting_again(mlp, tmp_path, monkeypatch):
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    exports = testing.count_onnx_exports(monkeypatch)  # a spy: paddle2onnx really runs
    onnx = hwdeploy.convert(mlp.model, "onnx")  # what ONNX Runtime's predictor asks for
    assert not onnx.cached and exports == [mlp.model.sha256]
    ir = hwdeploy.convert(mlp.model, "openvino")
    assert exports == [mlp.model.sha256], "OpenVINO exported the model to ONNX again"
    assert ir.metadata["onnx"] == {"directory": str(onnx.directory), "cached": True}
    assert ir.metadata["paddle2onnx"] == onnx.metadata["paddle2onnx"] and ir.metadata["openvino"]
    p = hwdeploy.predictor(mlp.model, "cpu", backend="openvino", threads=1)
    assert_parity(hwdeploy.predictor(mlp.model, "cpu", threads=1), p, mlp.sample_inputs(2, seed=1))


def test_the_options_reference_documents_this_plugin():
    from pathlib import Path

    import hwdeploy
    from hwdeploy.sdk.testing import assert_options_documented

    declared = [(p, s) for p, s in hwdeploy.option_schemas() if p == "openvino"]
    assert declared
    assert_options_documented(declared, Path(__file__).resolve().parents[3] / "docs" / "options.md")


def test_every_option_refuses_every_wrong_value(mlp):
    from hwdeploy_openvino.plugin import CONVERSION_OPTIONS, OPTIONS

    def predict(options):
        return hwdeploy.predictor(mlp.model, "cpu", backend="openvino", **options)

    assert testing.assert_refuses_wrong_options(OPTIONS, predict) >= 25
    assert testing.assert_refuses_wrong_options(
        CONVERSION_OPTIONS, lambda options: hwdeploy.convert(mlp.model, "openvino", **options)) >= 6


def test_a_batch_the_onnx_export_fixed_is_refused_before_the_run():
    detector = zoo.get("tiny_detector")
    with hwdeploy.predictor(detector.model, "cpu", backend="openvino", threads=1) as p:
        with pytest.raises(InputError, match=r"axis 0: 2 != 1"):
            p.run(*detector.sample_inputs(2, seed=0))
        assert any("the ONNX export is static at [1, 2]" in e for e in p.receipt().evidence)
