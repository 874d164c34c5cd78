"""The CPU reference backend: Paddle Inference on the host CPU.

Written exactly as a vendor plugin would be: hooks only, registered through
the ``hwdeploy`` entry-point group of the hwdeploy distribution itself. Every
parity check compares against this backend.
"""

from __future__ import annotations

import platform
from typing import Any

from hwdeploy import ConversionTarget, Device, hookimpl
from hwdeploy.builtin import cpu_int8
from hwdeploy.errors import BackendError, OptionError
from hwdeploy.sdk.calibration import CALIBRATION
from hwdeploy.sdk.options import CHECK_FINITE, THREADS, Option, OptionSchema
from hwdeploy.sdk.hostinfo import cpu_name, default_threads, memory_bytes
from hwdeploy.sdk import paddle_inference as pi

KIND = "cpu"
OPTIONS = OptionSchema("cpu backend", [
    THREADS,
    Option("ir_optim", bool, True, "Paddle's graph optimisation passes (off gives up every fusion)", nullable=False),
    Option("onednn", bool, None, "oneDNN kernels (default: on, unless the program has ops oneDNN cannot run)"),
    Option("memory_optim", bool, None, "Paddle's memory reuse pass (default: legacy programs only)"),
    Option("optim_cache", bool, True, "cache the optimised program on disk", nullable=False),
    CHECK_FINITE,
    Option("precision", str, "fp32", "fp32; bf16 (oneDNN bfloat16 kernels); int8 (Paddle's post-training quantization"
           " of the legacy program, run on oneDNN int8)", choices=("fp32", "bf16", "int8"), nullable=False),
    CALIBRATION,
])


@hookimpl
def hwdeploy_option_schemas() -> list[OptionSchema]:
    return [OPTIONS, cpu_int8.CONVERSION_OPTIONS]


@hookimpl
def hwdeploy_discover_devices() -> list[Device]:
    version = pi.paddle_version()
    # The parity reference of every check, and a CPU backend: no accelerator signature to expect.
    device = Device(KIND, 0, name=cpu_name(), backend=pi.BACKEND, priority=0, reference=True, host_compute=True,
                    memory_bytes=memory_bytes(), versions={"paddlepaddle": version} if version else {},
                    details={"threads": default_threads(), "machine": platform.machine()})
    if not version:
        device.available = False
        device.reason = "paddlepaddle is not installed (pip install paddlepaddle)"
    return [device]


@hookimpl
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.kind != KIND or device.backend != pi.BACKEND:
        return None
    settings = OPTIONS.check(options)
    if settings["precision"] == "int8":
        return cpu_int8.create_predictor(model, device, settings, options)
    if settings["calibration"] is not None:
        raise OptionError("cpu backend: calibration= is only used with precision='int8'")
    def make_config():
        config = pi.make_config(model, threads=settings["threads"], ir_optim=settings["ir_optim"],
                                onednn=settings["onednn"], memory_optim=settings["memory_optim"],
                                optim_cache=settings["optim_cache"], cache_tag=settings["precision"])
        if settings["precision"] == "bf16" and config.onednn_enabled():
            config.enable_onednn_bfloat16()
        return config

    config = make_config()
    blockers = pi.onednn_blockers(model) if settings["onednn"] is None else []
    receipt_extra = None
    if settings["precision"] == "bf16":
        unsupported = pi.bf16_unsupported()
        if unsupported:
            raise BackendError(f"cpu backend: precision='bf16': {unsupported}")
        if not config.onednn_enabled():
            raise OptionError(f"cpu backend: precision='bf16' runs on oneDNN, which is off for this model"
                              f" ({blockers or 'onednn=False'})")
        bf16_ops = cpu_int8.ops_with_outputs(model, make_config(), ("paddle.bfloat16",))
        receipt_extra = cpu_int8.precision_receipt("bf16", bf16_ops)
    predictor = pi.PaddleInferencePredictor(model, device, config, options=options, receipt_extra=receipt_extra,
                                            check_finite=settings["check_finite"])
    if blockers:
        predictor.notes.append(f"oneDNN without its placement pass ({pi.ONEDNN_PLACEMENT_PASS} deleted): Paddle"
                               f" {pi.paddle_version()} cannot run {blockers} on oneDNN, so they keep their CPU"
                               " kernels while the fused convolutions and matmuls run on oneDNN")
    return predictor


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    return [ConversionTarget(cpu_int8.TARGET, "int8 legacy Paddle program (Paddle's static post-training"
                             " quantization, calibration= data) for oneDNN int8", device_kinds=(KIND,))]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir):
    if target != cpu_int8.TARGET:
        return None
    return cpu_int8.quantize(model, options, output_dir)
