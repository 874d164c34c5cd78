"""Paddle Lite for hwdeploy: ARM CPUs, Lite's x86 target, and Lite's NNAdapter NPU targets.

Public helpers (importing this package is cheap; Paddle and Lite load on first use):

- :func:`convert_to_nb` -- Paddle model -> ``.nb`` for any opt ``valid_targets``, with an ops report
  (other plugins delegate their Lite targets to it);
- :func:`load_nb` -- a predictor on an existing ``.nb`` (refused if this host cannot execute it);
- :func:`setup_lite_env` / :func:`find_lite_python` -- the CPython <= 3.10 + paddlelite environment;
- :class:`LiteWorker` -- the long-lived Lite worker process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hwdeploy_arm.predictor import LitePredictor

__all__ = ["LiteWorker", "LiteWorkerError", "UnrunnableModelError", "convert_to_nb", "find_lite_python", "load_nb",
           "read_nb", "setup_lite_env"]


def load_nb(path, device: str = "", **options: Any) -> "LitePredictor":
    """A :class:`~hwdeploy_arm.predictor.LitePredictor` on the ``.nb`` at ``path``.

    ``device`` defaults to this host's Lite device (``cpu:0`` on x86, ``arm:0`` on ARM). Options: ``threads``,
    ``power_mode``, ``timeout``, ``check_finite``, ``inputs``/``outputs`` (TensorSpecs; read from the
    ``lite_report.json`` hwdeploy's converter leaves beside the ``.nb`` when not given, else unchecked).
    Raises :class:`UnrunnableModelError` if the ``.nb`` holds kernels this host cannot execute.
    """
    import json
    from pathlib import Path

    from hwdeploy.contract.records import Device, DeviceSpec
    from hwdeploy.contract.model import TensorSpec

    from hwdeploy_arm.convert import REPORT_NAME
    from hwdeploy_arm.predictor import LitePredictor, host_kind

    spec = DeviceSpec.parse(device or ("arm:0" if host_kind() == "arm" else "cpu:0"))
    report_path = Path(path).with_name(REPORT_NAME)
    if "inputs" not in options and report_path.exists():
        report = json.loads(report_path.read_text())
        for key in ("inputs", "outputs"):
            options[key] = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in report.get(key, [])] or None
        options.setdefault("report", report)
    return LitePredictor(path, Device(spec.kind, spec.index or 0, backend="paddle-lite"), **options)


def __getattr__(name: str):
    if name in ("convert_to_nb",):
        from hwdeploy_arm import convert

        return getattr(convert, name)
    if name in ("setup_lite_env", "find_lite_python"):
        from hwdeploy_arm import env

        return getattr(env, name)
    if name in ("LiteWorker", "LiteWorkerError"):
        from hwdeploy_arm import worker

        return getattr(worker, name)
    if name in ("UnrunnableModelError", "read_nb"):
        from hwdeploy_arm import nb

        return getattr(nb, name)
    raise AttributeError(f"module 'hwdeploy_arm' has no attribute {name!r}")
