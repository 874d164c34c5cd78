"""The ONNX Runtime plugin through hwdeploy's public API: discovery, conversion, parity, receipts, errors."""

import numpy as np
import pytest

import hwdeploy
from hwdeploy import zoo
from hwdeploy.errors import InputError, OptionError, UnsupportedOpsError
from hwdeploy.sdk import testing
from hwdeploy.sdk.testing import assert_clones_agree, assert_parity


@pytest.fixture(scope="module")
def mlp():
    return zoo.get("mlp")


@pytest.fixture(scope="module")
def mobilenet():
    return zoo.get("mobilenet_v2")


def ort_devices():
    return [d for d in hwdeploy.devices(refresh=True) if d.backend == "onnxruntime"]


def test_discovery_reports_a_cpu_device_below_the_reference():
    cpu = next(d for d in ort_devices() if d.kind == "cpu")
    assert cpu.available, cpu.reason
    assert cpu.plugin == "onnxruntime"
    assert cpu.priority < 0  # plain "auto" keeps the Paddle Inference reference
    assert cpu.versions["onnxruntime"] and cpu.versions["paddle2onnx"]


def test_gpu_is_reported_with_the_reason_it_is_absent():
    gpu = next(d for d in ort_devices() if d.kind == "gpu")
    from importlib import metadata

    try:
        metadata.version("onnxruntime-gpu")
        pytest.skip("onnxruntime-gpu is installed here")
    except metadata.PackageNotFoundError:
        pass
    assert not gpu.available
    assert "onnxruntime-gpu" in gpu.reason


def test_discovery_imports_neither_onnxruntime_nor_paddle():
    assert testing.modules_imported_by_discovery("onnxruntime", ["onnxruntime", "paddle", "paddle2onnx", "onnx"]) == []


def test_plain_auto_never_picks_the_onnxruntime_cpu_device(mlp):
    # Priority -1: "auto" keeps the Paddle Inference reference (or any device with priority >= 0).
    with hwdeploy.predictor(mlp.model, "auto", threads=1) as p:
        assert p.receipt().backend != "onnxruntime"


# tiny_segmenter: run-time-size bilinear resizes; then the op families of PP-LCNet, ShuffleNetV2, DB, CRNN/SVTR
# and PicoDet's distribution-focal head
@pytest.mark.parametrize("name", ["mlp", "mobilenet_v2", "tiny_segmenter", "lcnet_small", "shufflenet_small",
                                  "ocr_detector", "ocr_recognizer", "tiny_detector_raw"])
def test_parity_with_the_cpu_reference(name):
    z = zoo.get(name)
    reference = hwdeploy.predictor(z.model, "cpu", threads=1)
    ort = hwdeploy.predictor(z.model, "cpu", backend="onnxruntime", threads=1)
    for batch in (1, 3):
        assert_parity(reference, ort, z.sample_inputs(batch, seed=5), tol=1e-4)  # and the same names


def test_the_onnx_export_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """paddle2onnx's optimiser runs ONNX Runtime's symbolic shape inference, which writes
    sym_shape_infer_temp.onnx + external data into the working directory on run-time shapes (tiny_segmenter):
    the export child works in a private directory of its own."""
    from hwdeploy.sdk.onnx_export import export_onnx

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "out").mkdir()
    path, facts = export_onnx(zoo.get("tiny_segmenter").model, tmp_path / "out")
    assert list((tmp_path / "cwd").iterdir()) == []
    assert [f.name for f in (tmp_path / "out").iterdir()] == ["model.onnx"] and facts["onnx_nodes"]


def test_receipt_reads_providers_and_node_placement_back_from_the_session(mobilenet):
    p = hwdeploy.predictor(mobilenet.model, "cpu", backend="onnxruntime", threads=2)
    receipt = p.receipt()
    assert receipt.backend == "onnxruntime" and receipt.actual == "cpu:0" and receipt.plugin == "onnxruntime"
    assert receipt.fallback_reasons() == []
    assert any("session.get_providers() = ['CPUExecutionProvider']" in line for line in receipt.evidence)
    assert any("intra_op_num_threads=2" in line for line in receipt.evidence)
    assert receipt.ops_known
    convs = [op for op in receipt.ops if op.op == "onnx::Conv"]
    assert convs and convs[0].device == "cpu:0" and convs[0].count >= 50  # MobileNetV2 has 52 convolutions
    assert receipt.runtime_versions["onnxruntime"]
    assert p.device.id == "cpu:0" and p.device.backend == "onnxruntime"


def test_conversion_is_cached_by_content_hash(mlp):
    first = hwdeploy.convert(mlp.model, "onnx")
    second = hwdeploy.convert(mlp.model, "onnx")
    assert second.cached and second.directory == first.directory
    assert first.path().suffix == ".onnx" and first.path().stat().st_size > 0
    assert first.metadata["paddle2onnx"] and first.metadata["onnx_nodes"] > 0
    other_opset = hwdeploy.convert(mlp.model, "onnx", opset=17)
    assert other_opset.directory != first.directory


def test_clones_run_in_threads_with_identical_results(mlp):
    p = hwdeploy.predictor(mlp.model, "cpu", backend="onnxruntime", threads=1)
    assert_clones_agree(p, mlp.sample_inputs(4, seed=2), clones=3, runs=20)
    assert p.clone().receipt().backend == "onnxruntime"


def test_inputs_are_validated_before_onnxruntime_sees_them(mlp):
    p = hwdeploy.predictor(mlp.model, "cpu", backend="onnxruntime", threads=1)
    x = mlp.sample_inputs(1)[0]
    with pytest.raises(InputError, match="shape"):
        p.run(x[:, :10])
    with pytest.raises(InputError, match="dtype"):
        p.run(x.astype("float64"))
    bad = x.copy()
    bad[0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        p.run(bad)


@pytest.mark.parametrize("options, match", [
    ({"ir_optim": False}, "unknown option"),
    ({"precision": "fp16"}, "precision"),
    ({"threads": 0}, "threads"),
])
def test_bad_options_are_refused(mlp, options, match):
    with pytest.raises(OptionError, match=match):
        hwdeploy.predictor(mlp.model, "cpu", backend="onnxruntime", **options)


def test_bad_opset_is_refused(mlp):
    with pytest.raises(OptionError, match="opset"):
        hwdeploy.convert(mlp.model, "onnx", opset=3)


# ---------------------------------------------------------------- the shared ONNX path


@pytest.fixture(scope="module")
def unconvertible(tmp_path_factory):
    """Real models paddle2onnx cannot convert (the same ones the OpenVINO plugin's tests use)."""
    return testing.build_onnx_unconvertible(tmp_path_factory.mktemp("unconvertible"))


def test_every_op_without_an_onnx_mapping_is_named_and_the_host_survives(unconvertible):
    # paddle2onnx 2.1 aborts its process (SIGABRT) on these ops: the export must run isolated.
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.predictor(unconvertible["unmapped"], "cpu", backend="onnxruntime")
    assert info.value.ops == testing.ONNX_UNMAPPED_OPS == ["pd_op.det", "pd_op.inverse"]
    assert "paddle2onnx" in str(info.value) and "pd_op.det, pd_op.inverse" in str(info.value)
    with pytest.raises(UnsupportedOpsError) as direct:  # the same answer from the shared target itself
        hwdeploy.convert(unconvertible["unmapped"], "onnx")
    assert direct.value.ops == info.value.ops


def test_an_op_paddle2onnx_fails_on_is_named_with_its_message(unconvertible):
    # nearest_interp in NHWC: paddle2onnx 2.1 has the mapper, prints why it fails and sys.exit()s.
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.predictor(unconvertible["mapper_fails"], "cpu", backend="onnxruntime")
    assert info.value.ops == testing.ONNX_MAPPER_FAILS_OPS == ["pd_op.nearest_interp"]
    assert "NHWC is not supported" in str(info.value)


def test_a_float64_resize_scale_is_fixed_up_on_a_copy_and_runs_with_parity(tmp_path, monkeypatch):
    """Paddle 3.3 writes nearest_interp's scale as float64, paddle2onnx 2.1 reads float32 only: the export
    rewrites a copy of the program, says so in its facts, and the resize is the same as Paddle's."""
    directory = testing.build_model(testing.UPSAMPLE_NEAREST, tmp_path / "up" / "model").parent
    before = {f.name: f.read_bytes() for f in directory.iterdir()}
    artifact = hwdeploy.convert(directory, "onnx")
    assert artifact.metadata["program_fixups"] == [
        "pd_op.nearest_interp: scale float64 -> float32 in 1 op (paddle2onnx 2.1 reads float32)"]
    assert {f.name: f.read_bytes() for f in directory.iterdir()} == before  # the user's model is untouched
    assert sorted(artifact.files) == ["model.onnx"] and not list(artifact.directory.glob("fixed-*"))
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype("float32")
    with hwdeploy.predictor(directory, "cpu", threads=1) as reference, \
            hwdeploy.predictor(directory, "cpu", backend="onnxruntime", threads=1) as ort:
        expected, got = reference.run(x)[0], ort.run(x)[0]
    assert got.shape == expected.shape == (2, 4, 16, 16)
    assert testing.rel_l2(got, expected) <= 1e-5


def test_the_fix_up_leaves_a_scale_float32_would_round_and_other_ops_alone():
    from hwdeploy.sdk.onnx_export import fix_up_for_paddle2onnx

    def interp(name, scale):
        return {"#": f"1.{name}", "A": [{"AT": {"#": "0.a_array", "D": [{"#": "0.a_f64", "D": v} for v in scale]},
                                         "N": "scale"}]}

    program = {"regions": [{"blocks": [{"ops": [interp("bilinear_interp", [0.5, 0.5]), interp("nearest_interp", [0.1]),
                                                interp("nearest_interp", []), interp("scale", [2.0])]}]}]}
    assert fix_up_for_paddle2onnx(program) == [
        "pd_op.bilinear_interp: scale float64 -> float32 in 1 op (paddle2onnx 2.1 reads float32)"]
    ops = program["regions"][0]["blocks"][0]["ops"]
    assert [e["#"] for op in ops for e in op["A"][0]["AT"]["D"]] == ["0.a_f32", "0.a_f32", "0.a_f64", "0.a_f64"]


def test_the_onnx_file_another_onnx_reader_exported_is_not_exported_again(mlp, tmp_path, monkeypatch):
    """One export per model for every ONNX runtime: the built-in "onnx" target, cached by content hash."""
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    exports = testing.count_onnx_exports(monkeypatch)  # a spy: paddle2onnx really runs
    first = hwdeploy.convert(mlp.model, "onnx")  # what OpenVINO, or any other ONNX reader, asks for
    assert not first.cached and len(exports) == 1
    p = hwdeploy.predictor(mlp.model, "cpu", backend="onnxruntime", threads=1)
    assert len(exports) == 1, "ONNX Runtime exported the model again"
    assert [d.name for d in (tmp_path / "cache" / "convert").iterdir()] == ["onnx"]
    assert len(list((tmp_path / "cache" / "convert" / "onnx").iterdir())) == 1
    assert_parity(hwdeploy.predictor(mlp.model, "cpu", threads=1), p, mlp.sample_inputs(2, seed=1))


def test_the_options_reference_documents_this_plugin():
    from pathlib import Path

    import hwdeploy
    from hwdeploy.sdk.testing import assert_options_documented

    declared = [(p, s) for p, s in hwdeploy.option_schemas() if p == "onnxruntime"]
    assert declared
    assert_options_documented(declared, Path(__file__).resolve().parents[3] / "docs" / "options.md")


def test_every_option_refuses_every_wrong_value(mlp):
    from hwdeploy_onnxruntime.int8 import CONVERSION_OPTIONS
    from hwdeploy_onnxruntime.plugin import OPTIONS

    def predict(options):
        return hwdeploy.predictor(mlp.model, "cpu", backend="onnxruntime", **options)

    assert testing.assert_refuses_wrong_options(OPTIONS, predict) >= 25
    assert testing.assert_refuses_wrong_options(
        CONVERSION_OPTIONS, lambda options: hwdeploy.convert(mlp.model, "onnx-int8", **options)) >= 15


def test_a_batch_the_onnx_export_fixed_is_refused_before_the_run():
    """paddle2onnx exports multiclass_nms3 with a static batch of 1: batch 2 is an InputError up front (it was
    ONNX Runtime's INVALID_ARGUMENT after the call), and the receipt says why the shape is narrower."""
    detector = zoo.get("tiny_detector")
    with hwdeploy.predictor(detector.model, "cpu", backend="onnxruntime", threads=1) as p:
        assert [s.shape[0] for s in p.inputs] == [1, 1]
        with pytest.raises(InputError, match=r"axis 0: 2 != 1"):
            p.run(*detector.sample_inputs(2, seed=0))
        boxes, counts = p.run(*detector.sample_inputs(1, seed=0))
        assert any("the ONNX export is static at [1, 3, 64, 64]" in e for e in p.receipt().evidence)
    assert boxes.shape[1] == 6 and counts.shape == (1,) and counts[0] == len(boxes)
