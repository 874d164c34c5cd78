"""hwdeploy hooks for OpenVINO: a ``cpu`` device and the conversion target ``openvino`` (IR).

The IR is converted from hwdeploy's built-in, cached ``onnx`` target (see :mod:`.convert`);
``precision="int8"`` quantizes it with NNCF through the plugin's own target ``openvino-int8``
(see :mod:`.int8`), ``precision="bf16"`` asks the CPU plugin for bf16 inference.

The device has priority -1: plain ``device="auto"`` keeps the Paddle
Inference reference; ``hwdeploy.predictor(m, "cpu", backend="openvino")`` or
``device="auto:fastest"`` picks it. Importing this module imports neither
OpenVINO nor Paddle.
"""

from __future__ import annotations

from typing import Any

from hwdeploy import Device, hookimpl
from hwdeploy.errors import BackendError, OptionError
from hwdeploy.sdk.calibration import CALIBRATION
from hwdeploy.sdk.options import CHECK_FINITE, THREADS, Option, OptionSchema
from hwdeploy.sdk.hostinfo import cpu_name, default_threads, dist_version, int8_saturates, memory_bytes
from hwdeploy.sdk.onnx_export import OPSET, converter_missing, onnx_options
from hwdeploy.contract.records import Artifact, ConversionTarget

from hwdeploy_openvino import convert, int8
from hwdeploy_openvino.predictor import BACKEND, PRECISIONS, ov_version

TARGET = "openvino"
PRIORITY = -1  # below the Paddle Inference CPU reference (0): "auto" keeps the reference
HINTS = ("latency", "throughput")
OPTIONS = OptionSchema("openvino backend", [
    THREADS,
    Option("precision", str, "fp32", "fp32; bf16 (the CPU plugin's inference precision hint); int8 (NNCF"
           " post-training quantization with calibration= data)", choices=tuple(PRECISIONS), nullable=False),
    CHECK_FINITE,
    OPSET,
    Option("hint", str, "latency", "OpenVINO PERFORMANCE_HINT", choices=HINTS, nullable=False),
    Option("cache", bool, True, "keep OpenVINO's compiled blobs in hwdeploy's cache", nullable=False),
    CALIBRATION,
])
CONVERSION_OPTIONS = OptionSchema("openvino conversion", [OPSET])


@hookimpl
def hwdeploy_option_schemas() -> list[OptionSchema]:
    return [OPTIONS, CONVERSION_OPTIONS, int8.CONVERSION_OPTIONS]


@hookimpl
def hwdeploy_discover_devices() -> list[Device]:
    ov, p2o = ov_version(), dist_version("paddle2onnx")
    device = Device("cpu", 0, name=cpu_name(), memory_bytes=memory_bytes(), backend=BACKEND, priority=PRIORITY,
                    versions={k: v for k, v in (("openvino", ov), ("paddle2onnx", p2o)) if v},
                    details={"threads": default_threads(), "openvino_device": "CPU"})
    missing = "openvino is not installed (pip install openvino)" if not ov else converter_missing("for OpenVINO")
    if missing:
        device.available, device.reason = False, missing
    return [device]


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    return [ConversionTarget(TARGET, "OpenVINO IR (.xml/.bin, fp32) from the shared ONNX export", device_kinds=("cpu",)),
            ConversionTarget(int8.TARGET, "int8 OpenVINO IR (NNCF post-training quantization, calibration= data) of"
                             " the 'openvino' IR", device_kinds=("cpu",))]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir) -> Artifact | None:
    if target == int8.TARGET:
        return int8.quantize(model, options, output_dir)
    if target != TARGET:
        return None
    opset = CONVERSION_OPTIONS.check(options)["opset"]
    xml, facts = convert.convert_to_ir(model, output_dir, opset)
    return Artifact(TARGET, output_dir, [xml.name, xml.with_suffix(".bin").name], facts)


@hookimpl
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.backend != BACKEND:
        return None
    settings = OPTIONS.check(options)
    precision = settings["precision"]
    if precision != "int8" and settings["calibration"] is not None:
        raise OptionError("openvino backend: calibration= is only used with precision='int8'")
    import hwdeploy
    from hwdeploy_openvino.predictor import OvPredictor, bf16_unsupported

    if precision == "bf16" and bf16_unsupported():  # refused before any conversion, with the reason
        raise BackendError(f"openvino backend: precision='bf16': {bf16_unsupported()}")
    artifact = hwdeploy.convert(model, TARGET, **onnx_options(settings["opset"]))  # the IR, over the shared ONNX
    if precision == "int8":
        if int8.nncf_missing():
            raise OptionError(f"openvino backend: {int8.nncf_missing()}")
        from hwdeploy import zoo
        from hwdeploy.sdk import calibration

        data = settings["calibration"] if settings["calibration"] is not None else zoo.calibration_of(model)

        # Checked (names, dtypes, shapes, finite, not empty) before NNCF runs; cached by content hash.
        conversion = calibration.conversion_options(model, data, "openvino backend")
        # The overflow fix follows this CPU and is passed explicitly, so the cache keeps one IR per choice.
        artifact = hwdeploy.convert(model, int8.TARGET, **conversion, **onnx_options(settings["opset"]),
                                    overflow_fix=int8_saturates())
    return OvPredictor(model, device, artifact.path(), threads=settings["threads"], precision=settings["precision"],
                       hint=settings["hint"], cache=settings["cache"], check_finite=settings["check_finite"],
                       options=options, conversion=artifact.metadata)
