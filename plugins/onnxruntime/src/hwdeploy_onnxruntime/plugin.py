"""hwdeploy hooks for ONNX Runtime: a ``cpu`` device (and ``gpu`` with onnxruntime-gpu).

The CPU device has priority -1: plain ``device="auto"`` keeps the Paddle
Inference reference; ``hwdeploy.predictor(m, "cpu", backend="onnxruntime")``
or ``device="auto:fastest"`` picks it. Models reach ONNX Runtime through
hwdeploy's built-in conversion target ``onnx`` (``hwdeploy.convert(m, "onnx")``),
so the ONNX file is cached once for every runtime that reads it.
``precision="int8"`` runs the plugin's own conversion target ``onnx-int8``
(static QDQ quantization with ``calibration=`` data, see
:mod:`hwdeploy_onnxruntime.int8`) on top of that export. Importing this
module imports neither onnxruntime nor Paddle.
"""

from __future__ import annotations

from typing import Any

from hwdeploy import ConversionTarget, Device, hookimpl
from hwdeploy.errors import OptionError
from hwdeploy.sdk.calibration import CALIBRATION
from hwdeploy.sdk.options import CHECK_FINITE, THREADS, Option, OptionSchema
from hwdeploy.sdk.hostinfo import cpu_name, default_threads, dist_version, int8_saturates, memory_bytes
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.onnx_export import OPSET, TARGET as ONNX, converter_missing, onnx_options

from hwdeploy_onnxruntime.predictor import BACKEND, ort_version

CPU_PRIORITY = -1  # below the Paddle Inference CPU reference (0): "auto" keeps the reference
GPU_PRIORITY = 40  # below Paddle's own GPU backends (100)
PRECISIONS = ("fp32", "int8")
OPTIONS = OptionSchema("onnxruntime backend", [
    THREADS,
    Option("precision", str, "fp32", "fp32, or int8: static QDQ quantization with calibration= data",
           choices=PRECISIONS, nullable=False),
    CHECK_FINITE,
    OPSET,
    Option("spinning", bool, True, "idle intra-op threads spin (lower latency; off frees the cores between runs)",
           nullable=False),
    CALIBRATION,
])
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
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.backend != BACKEND:
        return None
    settings = OPTIONS.check(options)
    precision = settings["precision"]
    if precision != "int8" and settings["calibration"] is not None:
        raise OptionError("onnxruntime backend: calibration= is only used with precision='int8'")
    import hwdeploy
    from hwdeploy_onnxruntime.predictor import OrtPredictor

    # The built-in "onnx" target exports (paddle2onnx, in a child process) and caches by content hash:
    # OpenVINO and any other ONNX reader share the same file; unsupported ops raise UnsupportedOpsError.
    artifact = hwdeploy.convert(model, ONNX, **onnx_options(settings["opset"]))
    if precision == "int8":
        from hwdeploy import zoo
        from hwdeploy.sdk import calibration

        data = settings["calibration"] if settings["calibration"] is not None else zoo.calibration_of(model)
        from hwdeploy_onnxruntime import int8

        # Checked (names, dtypes, shapes, finite, not empty) before the quantizer runs; cached by content hash.
        conversion = calibration.conversion_options(model, data, "onnxruntime backend",
                                                    artifact.path())
        # reduce_range follows this CPU and is passed explicitly, so the cache keeps one artifact per choice.
        artifact = hwdeploy.convert(model, int8.TARGET, **conversion, **onnx_options(settings["opset"]),
                                    reduce_range=int8_saturates())
    return OrtPredictor(model, device, artifact.path(), threads=settings["threads"], spinning=settings["spinning"],
                        check_finite=settings["check_finite"], options=options,
                        conversion=artifact.metadata, precision=precision)


@hookimpl
def hwdeploy_option_schemas() -> list[OptionSchema]:
    from hwdeploy_onnxruntime.int8 import CONVERSION_OPTIONS

    return [OPTIONS, CONVERSION_OPTIONS]


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    from hwdeploy_onnxruntime.int8 import TARGET

    return [ConversionTarget(TARGET, "int8 ONNX model (ONNX Runtime static QDQ quantization, per-channel weights,"
                                     " calibration= data) of the 'onnx' export", ("cpu",))]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir):
    from hwdeploy_onnxruntime.int8 import TARGET, quantize

    if target != TARGET:
        return None
    return quantize(model, options, output_dir)
