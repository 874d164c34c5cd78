"""The CPU reference backend: Paddle Inference on the host CPU.

Written exactly as a vendor plugin would be: hooks only, registered through
the ``hwdeploy`` entry-point group of the hwdeploy distribution itself. Every
parity check compares against this backend.
"""

from __future__ import annotations

import platform
from typing import Any

from hwdeploy import Device, hookimpl
from hwdeploy.errors import OptionError
from hwdeploy.sdk.options import check_options
from hwdeploy.sdk.hostinfo import cpu_name, default_threads, memory_bytes
from hwdeploy.sdk import paddle_inference as pi

KIND = "cpu"
OPTIONS = {"threads", "ir_optim", "onednn", "memory_optim", "optim_cache", "check_finite", "precision"}


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
    check_options("cpu backend", options, OPTIONS)
    precision = options.get("precision", "fp32")
    if precision != "fp32":
        raise OptionError(f"cpu backend: precision {precision!r} is not supported (fp32 only)")
    config = pi.make_config(model, threads=options.get("threads"), ir_optim=options.get("ir_optim", True),
                            onednn=options.get("onednn"), memory_optim=options.get("memory_optim"),
                            optim_cache=options.get("optim_cache", True))
    blockers = pi.onednn_blockers(model) if options.get("onednn") is None else []
    predictor = pi.PaddleInferencePredictor(model, device, config, options=options,
                                            check_finite=options.get("check_finite", True))
    if blockers:
        predictor.notes.append(f"oneDNN disabled: Paddle {pi.paddle_version()} cannot run {blockers} with oneDNN")
    return predictor
