"""hwdeploy hooks for ONNX Runtime: a ``cpu`` device (and ``gpu`` with onnxruntime-gpu), target ``onnx``.

The CPU device has priority -1: plain ``device="auto"`` keeps the Paddle
Inference reference; ``hwdeploy.predictor(m, "cpu", backend="onnxruntime")``
or ``device="auto:fastest"`` picks it. Importing this module imports neither
onnxruntime nor Paddle.
"""

from __future__ import annotations

from typing import Any

from hwdeploy import Device, hookimpl
from hwdeploy.errors import OptionError
from hwdeploy.sdk.options import check_options, check_threads
from hwdeploy.sdk.hostinfo import cpu_name, default_threads, dist_version, memory_bytes
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.onnx_export import converter_missing
from hwdeploy.contract.records import Artifact, ConversionTarget

from hwdeploy_onnxruntime import convert
from hwdeploy_onnxruntime.predictor import BACKEND, ort_version

TARGET = "onnx"
CPU_PRIORITY = -1  # below the Paddle Inference CPU reference (0): "auto" keeps the reference
GPU_PRIORITY = 40  # below Paddle's own GPU backends (100)
OPTIONS = {"threads", "precision", "check_finite", "opset", "spinning"}
PROBE_TTL = 86400.0


def available_providers() -> list[str]:
    """``onnxruntime.get_available_providers()`` (run in a probe subprocess)."""
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _gpu_device(versions: dict[str, str]) -> Device:
    gpu_build = dist_version("onnxruntime-gpu")
    device = Device("gpu", 0, name="CUDA through onnxruntime-gpu", backend=BACKEND, priority=GPU_PRIORITY,
                    versions=dict(versions))
    if not gpu_build:
        device.available = False
        device.reason = (f"the installed onnxruntime {versions.get('onnxruntime', '')} is the CPU-only build"
                         " (pip install onnxruntime-gpu for CUDAExecutionProvider)")
        return device
    # The version is an argument so that the cached answer is dropped when onnxruntime changes.
    probe = run_probe(f"{__name__}:available_providers", [gpu_build], timeout=60, cache_ttl=PROBE_TTL)
    if not probe.ok:
        device.available, device.reason = False, f"onnxruntime provider probe failed: {probe.error}"
    elif "CUDAExecutionProvider" not in probe.value:
        device.available = False
        device.reason = f"onnxruntime-gpu {gpu_build} offers no CUDAExecutionProvider (providers: {probe.value})"
    else:
        device.details["providers"] = probe.value
    return device


@hookimpl
def hwdeploy_discover_devices() -> list[Device]:
    ort, p2o = ort_version(), dist_version("paddle2onnx")
    versions = {k: v for k, v in (("onnxruntime", ort), ("paddle2onnx", p2o)) if v}
    cpu = Device("cpu", 0, name=cpu_name(), backend=BACKEND, priority=CPU_PRIORITY, memory_bytes=memory_bytes(),
                 versions=versions, details={"threads": default_threads(), "provider": "CPUExecutionProvider"})
    if not ort:
        cpu.available, cpu.reason = False, "onnxruntime is not installed (pip install onnxruntime)"
        return [cpu]
    missing = converter_missing("to ONNX")
    if missing:
        cpu.available, cpu.reason = False, missing
    gpu = _gpu_device(versions)
    if not cpu.available and gpu.available:  # same conversion path: same missing piece
        gpu.available, gpu.reason = False, cpu.reason
    return [cpu, gpu]


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    return [ConversionTarget(TARGET, "ONNX model via paddle2onnx (loaded by ONNX Runtime)",
                             device_kinds=("cpu", "gpu"))]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir) -> Artifact | None:
    if target != TARGET:
        return None
    check_options("onnx conversion", options, {"opset"})
    path, facts = convert.export_onnx(model, output_dir, options.get("opset", convert.DEFAULT_OPSET))
    return Artifact(TARGET, output_dir, [path.name], facts)


@hookimpl
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.backend != BACKEND:
        return None
    check_options("onnxruntime backend", options, OPTIONS)
    precision = options.get("precision", "fp32")
    if precision != "fp32":
        raise OptionError(f"onnxruntime backend: precision {precision!r} is not supported (fp32 only)")
    threads = options.get("threads")
    check_threads(threads)
    import hwdeploy
    from hwdeploy_onnxruntime.predictor import OrtPredictor

    # Only an explicit opset goes into the cache key, so hwdeploy.convert(m, "onnx") shares the artifact.
    artifact = hwdeploy.convert(model, TARGET, **({"opset": options["opset"]} if "opset" in options else {}))
    return OrtPredictor(model, device, artifact.path(), threads=threads, spinning=options.get("spinning", True),
                        check_finite=options.get("check_finite", True), options=options,
                        conversion=artifact.metadata)
