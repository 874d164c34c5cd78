"""Hardware tests: need an NVIDIA GPU and a CUDA (+TensorRT) build of Paddle. Run in a lab with ``-m nvidia``.

Here (no GPU, CPU wheel) every test skips with the reason discovery gives.
See plugins/nvidia/README.md, "Running the hardware tests".
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import hwdeploy
from hwdeploy.sdk.testing import rel_l2
from hwdeploy.contract.records import DeviceSpec

pytestmark = pytest.mark.nvidia

ZOO = ["mlp", "mobilenet_v2", "resnet18", "transformer_encoder", "gru_text", "unet_small"]
#: Direct-parity bounds (relative L2 error, cosine) when the conformance suite is not installed.
#: fp32 TensorRT uses TF32 on Ampere and later, hence not 1e-5.
PARITY = {"fp32": (5e-3, 0.9999), "fp16": (3e-2, 0.999)}
VENDOR_CONFIG = Path(__file__).resolve().parent.parent / "conformance.toml"


@pytest.fixture(scope="module")
def gpu():
    wanted = DeviceSpec.parse(os.environ.get("HWDEPLOY_TEST_GPU", "gpu"))
    found = [d for d in hwdeploy.devices() if d.plugin == "nvidia"]
    usable = [d for d in found if d.available and wanted.matches(d)]
    if not usable:
        why = "; ".join(f"{d.id}: {d.reason}" for d in found) or "the nvidia plugin reported no gpu"
        pytest.skip(f"needs an NVIDIA GPU with a CUDA build of Paddle ({why})")
    return usable[0]


@pytest.fixture(scope="module")
def trt_gpu(gpu):
    status = gpu.details.get("tensorrt") or {}
    if not (status.get("subgraph") and status.get("pir")):
        pytest.skip(f"needs TensorRT usable from Paddle: {status.get('reason')}")
    return gpu


def _zoo(name: str):
    from hwdeploy import zoo

    return zoo.get(name)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", ZOO)
def test_zoo_conforms_on_the_gpu(trt_gpu, name, precision, tmp_path):
    """The conformance suite (parity, receipts, NVML utilisation, threads) for each zoo model and precision."""
    try:
        from hwdeploy_conformance.runner import Conformance
    except ImportError:
        Conformance = None
    if Conformance is not None:
        run = Conformance(trt_gpu.id, models=[f"zoo:{name}"], precisions=[precision], scope="full",
                          config=VENDOR_CONFIG, only=["load", "reference", "parity", "fallback_receipt",
                                                      "determinism", "bad_input", "perf_accuracy",
                                                      "fallback_utilization", "concurrency"])
        results = run.run()
        bad = [f"{r.id}: {r.status} {r.message}" for r in results if r.outcome not in ("pass", "skip", "xfail")]
        assert results and not bad, "\n".join(bad)
        return
    # Without the suite: direct parity against device="cpu" across the batch range, plus the receipt.
    z = _zoo(name)
    cpu = hwdeploy.predictor(z.model, device="cpu")
    dev = hwdeploy.predictor(z.model, device=trt_gpu.id, precision=precision)
    receipt = dev.receipt()
    assert receipt.actual == trt_gpu.id and not receipt.fallback_reasons(), receipt.to_json(indent=1)
    max_err, min_cos = PARITY[precision]
    for batch in sorted({z.entry.batch_range[0], z.entry.batch_range[1]}):
        x = z.sample_inputs(batch=batch, seed=batch)
        for got, want in zip(dev.run(*x), cpu.run(*x)):
            assert rel_l2(got, want) <= max_err and _cosine(got, want) >= min_cos, (name, precision, batch)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resnet18_runs_in_tensorrt_engines_and_keeps_the_gpu_busy(trt_gpu, precision):
    z = _zoo("resnet18")
    predictor = hwdeploy.predictor(z.model, device=trt_gpu.id, precision=precision, tensorrt=True)
    receipt = predictor.receipt()
    assert predictor.config.use_gpu() and receipt.actual == trt_gpu.id
    assert predictor.trt.mode == "pir-trt" and predictor.trt.engines >= 1
    assert any(op.op == "tensorrt_engine" and op.device == trt_gpu.id for op in receipt.ops)
    from hwdeploy.contract.manager import get_plugin_manager

    sampler = get_plugin_manager().call_first("hwdeploy_utilization_sampler", device=trt_gpu)[1]
    x = z.sample_inputs(batch=8)
    sampler.start()
    for _ in range(300):
        predictor.run(*x)
    stats = sampler.stop()
    assert stats["samples"] > 0 and stats["max_busy"] > 0.05, stats


def test_gpu_config_reports_what_was_asked(trt_gpu):
    from hwdeploy_nvidia.config import build_config
    from hwdeploy_nvidia.options import GpuOptions

    z = _zoo("resnet18")
    if z.legacy is None:
        pytest.skip(f"no legacy export of resnet18: {z.legacy_error}")
    for precision, name in (("fp32", "Float32"), ("fp16", "Half")):
        config, report = build_config(z.legacy, GpuOptions(precision=precision), trt_gpu.index, tensorrt=True)
        assert not report.refused and not report.fallback, report.to_dict()
        assert report.reported["use_gpu"] and report.reported["gpu_device_id"] == trt_gpu.index
        assert report.reported["tensorrt_engine_enabled"] is True
        assert str(report.reported["tensorrt_precision_mode"]).endswith(name)


@pytest.mark.parametrize("mode", ["explicit", "tuned"])
def test_dynamic_shape_modes_on_a_legacy_program(trt_gpu, mode, tmp_path):
    z = _zoo("mobilenet_v2")
    if z.legacy is None:
        pytest.skip(f"no legacy export of mobilenet_v2: {z.legacy_error}")
    options = ({"shapes": {"x": ([1, 3, 224, 224], [4, 3, 224, 224], [8, 3, 224, 224])}} if mode == "explicit"
               else {"sample_inputs": [z.sample_inputs(batch=b) for b in (1, 4, 8)]})
    predictor = hwdeploy.predictor(z.legacy, device=trt_gpu.id, precision="fp16", tensorrt=True, **options)
    assert predictor.trt.mode == "subgraph" and predictor.trt.engines >= 1
    if mode == "tuned":
        from hwdeploy_nvidia.engines import parse_shape_range_file

        ranges = parse_shape_range_file(predictor.trt.shape_file)
        assert ranges["x"]["min_shape"][0] == 1 and ranges["x"]["max_shape"][0] == 8
    cpu = hwdeploy.predictor(z.legacy, device="cpu")
    for batch in (1, 3, 8):
        x = z.sample_inputs(batch=batch, seed=batch)
        assert rel_l2(predictor.run(*x)[0], cpu.run(*x)[0]) <= PARITY["fp16"][0]


def test_engines_are_cached_and_reused(trt_gpu):
    z = _zoo("mlp")
    first = hwdeploy.predictor(z.model, device=trt_gpu.id, precision="fp16", tensorrt=True)
    engine_dir = first.trt.artifact_dir
    stamps = {p: p.stat().st_mtime_ns for p in engine_dir.rglob("*.trt")}
    assert stamps, f"no serialized engine under {engine_dir}"
    second = hwdeploy.predictor(z.model, device=trt_gpu.id, precision="fp16", tensorrt=True)
    assert second.trt.artifact_dir == engine_dir
    assert {p: p.stat().st_mtime_ns for p in engine_dir.rglob("*.trt")} == stamps  # nothing rebuilt


def test_convert_builds_engines_ahead_of_time(trt_gpu):
    z = _zoo("mobilenet_v2")
    artifact = hwdeploy.convert(z.model, "tensorrt", precision="fp16", shapes="x:1x3x224x224,4x3x224x224,8x3x224x224",
                                device=trt_gpu.id)
    assert artifact.metadata["engines"] >= 1 and artifact.metadata["fingerprint"]["gpu"] == trt_gpu.name
    assert all(Path(f).is_file() for f in artifact.metadata["engine_files"])
    again = hwdeploy.convert(z.model, "tensorrt", precision="fp16", shapes="x:1x3x224x224,4x3x224x224,8x3x224x224",
                             device=trt_gpu.id)
    assert again.cached
    # The converted program loads as a model: its engines are used as they are.
    predictor = hwdeploy.predictor(artifact.path("model.json"), device=trt_gpu.id)
    assert predictor.trt.mode == "prebuilt" and predictor.trt.engines >= 1
    x = z.sample_inputs(batch=4)
    cpu = hwdeploy.predictor(z.model, device="cpu")
    assert rel_l2(predictor.run(*x)[0], cpu.run(*x)[0]) <= PARITY["fp16"][0]


def test_int8_calibration_on_a_legacy_program(trt_gpu):
    z = _zoo("resnet18")
    if z.legacy is None:
        pytest.skip(f"no legacy export of resnet18: {z.legacy_error}")
    calibration = [z.sample_inputs(batch=1, seed=s) for s in range(16)]
    predictor = hwdeploy.predictor(z.legacy, device=trt_gpu.id, precision="int8", calibration_inputs=calibration)
    assert predictor.trt.engines >= 1 and not predictor.receipt().fallback_reasons()
    x = z.sample_inputs(batch=1, seed=99)
    cpu = hwdeploy.predictor(z.legacy, device="cpu")
    assert _cosine(predictor.run(*x)[0], cpu.run(*x)[0]) >= 0.98


def test_one_clone_per_thread(trt_gpu):
    z = _zoo("resnet18")
    predictor = hwdeploy.predictor(z.model, device=trt_gpu.id, precision="fp16")
    inputs = [z.sample_inputs(batch=2, seed=s) for s in range(4)]
    expected = [predictor.run(*x)[0] for x in inputs]
    results: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        clone = predictor.clone()
        results[i] = [clone.run(*x)[0] for x in inputs]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for outs in results.values():
        for got, want in zip(outs, expected):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
