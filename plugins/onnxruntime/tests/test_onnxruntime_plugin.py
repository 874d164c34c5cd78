"""The ONNX Runtime plugin through hwdeploy's public API: discovery, conversion, parity, receipts, errors."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hwdeploy
from hwdeploy import zoo
from hwdeploy.errors import ConversionError, InputError, OptionError, UnsupportedOpsError
from hwdeploy.sdk.testing import assert_parity, run_clones_in_threads


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
    code = textwrap.dedent("""
        import sys, hwdeploy
        found = [d for d in hwdeploy.devices() if d.backend == "onnxruntime"]
        assert found, "plugin not discovered"
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("onnxruntime", "paddle", "paddle2onnx", "onnx"))
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_plain_auto_never_picks_the_onnxruntime_cpu_device(mlp):
    # Priority -1: "auto" keeps the Paddle Inference reference (or any device with priority >= 0).
    with hwdeploy.predictor(mlp.model, "auto", threads=1) as p:
        assert p.receipt().backend != "onnxruntime"


@pytest.mark.parametrize("name", ["mlp", "mobilenet_v2"])
def test_parity_with_the_cpu_reference(name):
    z = zoo.get(name)
    reference = hwdeploy.predictor(z.model, "cpu", threads=1)
    ort = hwdeploy.predictor(z.model, "cpu", backend="onnxruntime", threads=1)
    for batch in (1, 3):
        assert_parity(reference, ort, z.sample_inputs(batch, seed=5), tol=1e-4)
    assert ort.output_names == reference.output_names
    assert ort.input_names == reference.input_names


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
    inputs = mlp.sample_inputs(4, seed=2)
    expected = p.run(*inputs)[0]
    results = run_clones_in_threads(p, inputs, clones=3, runs=20)
    assert len(results) == 60 and all(np.array_equal(r, expected) for r in results)
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
    with pytest.raises(ConversionError, match="opset"):
        hwdeploy.convert(mlp.model, "onnx", opset=3)


DET_MODEL = textwrap.dedent('''
    import sys
    import paddle

    class Det(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(4, 4)

        def forward(self, x):
            return paddle.linalg.det(self.fc(x))

    layer = Det()
    layer.eval()
    paddle.jit.save(layer, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 4, 4], "float32", "x")])
''')


def test_unsupported_operator_is_named_and_the_host_survives(tmp_path):
    # paddle2onnx 2.1 aborts its process on an unmapped operator: the export must run isolated.
    script = tmp_path / "build_det.py"
    script.write_text(DET_MODEL)
    subprocess.run([sys.executable, str(script), str(tmp_path / "det" / "model")], check=True, capture_output=True,
                   timeout=120)
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.convert(tmp_path / "det", "onnx")
    assert info.value.ops == ["pd_op.det"]
    assert "paddle2onnx" in str(info.value)
    with pytest.raises(UnsupportedOpsError):  # and through predictor creation
        hwdeploy.predictor(tmp_path / "det", "cpu", backend="onnxruntime")
