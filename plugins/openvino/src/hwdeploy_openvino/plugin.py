"""hwdeploy hooks for OpenVINO: a ``cpu`` device and the conversion target ``openvino`` (IR).

The device has priority -1: plain ``device="auto"`` keeps the Paddle
Inference reference; ``hwdeploy.predictor(m, "cpu", backend="openvino")`` or
``device="auto:fastest"`` picks it. Importing this module imports neither
OpenVINO nor Paddle.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from hwdeploy import Device, hookimpl
from hwdeploy.errors import OptionError
from hwdeploy.types import Artifact, ConversionTarget

from hwdeploy_openvino import convert
from hwdeploy_openvino.predictor import BACKEND, PRECISIONS, default_threads, ov_version

TARGET = "openvino"
PRIORITY = -1  # below the Paddle Inference CPU reference (0): "auto" keeps the reference
OPTIONS = {"threads", "precision", "check_finite", "opset", "hint", "cache"}
HINTS = ("latency", "throughput")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@hookimpl
def hwdeploy_discover_devices() -> list[Device]:
    ov, p2o = ov_version(), _version("paddle2onnx")
    device = Device("cpu", 0, name=_cpu_name(), memory_bytes=_memory_bytes(), backend=BACKEND, priority=PRIORITY,
                    versions={k: v for k, v in (("openvino", ov), ("paddle2onnx", p2o)) if v},
                    details={"threads": default_threads(), "openvino_device": "CPU"})
    if not ov:
        device.available, device.reason = False, "openvino is not installed (pip install openvino)"
    elif not p2o:
        device.available = False
        device.reason = "paddle2onnx is not installed: it converts Paddle models for OpenVINO (pip install paddle2onnx)"
    elif not (_version("paddlepaddle") or _version("paddlepaddle-gpu")):
        device.available = False
        device.reason = ("paddlepaddle is not installed: paddle2onnx needs it to read Paddle models"
                         " (pip install 'hwdeploy[paddle]')")
    return [device]


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    return [ConversionTarget(TARGET, "OpenVINO IR (.xml/.bin, fp32) via paddle2onnx", device_kinds=("cpu",))]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir) -> Artifact | None:
    if target != TARGET:
        return None
    unknown = set(options) - {"opset"}
    if unknown:
        raise OptionError(f"openvino conversion: unknown option(s) {sorted(unknown)}; known: ['opset']")
    xml, facts = convert.convert_to_ir(model, output_dir, options.get("opset", convert.DEFAULT_OPSET))
    return Artifact(TARGET, output_dir, [xml.name, xml.with_suffix(".bin").name], facts)


@hookimpl
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.backend != BACKEND:
        return None
    unknown = set(options) - OPTIONS
    if unknown:
        raise OptionError(f"openvino backend: unknown option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    precision = options.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise OptionError(f"openvino backend: precision {precision!r} is not supported (one of {sorted(PRECISIONS)})")
    hint = options.get("hint", "latency")
    if hint not in HINTS:
        raise OptionError(f"openvino backend: hint must be one of {HINTS}, got {hint!r}")
    threads = options.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise OptionError(f"threads must be a positive integer, got {threads!r}")
    import hwdeploy
    from hwdeploy_openvino.predictor import OvPredictor

    artifact = hwdeploy.convert(model, TARGET, **({"opset": options["opset"]} if "opset" in options else {}))
    return OvPredictor(model, device, artifact.path(), threads=threads, precision=precision, hint=hint,
                       cache=options.get("cache", True), check_finite=options.get("check_finite", True),
                       options=options, conversion=artifact.metadata)
