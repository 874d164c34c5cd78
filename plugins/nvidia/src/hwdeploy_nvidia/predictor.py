"""The GPU predictor: Paddle Inference on CUDA with TensorRT, and a receipt built from Paddle's own state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.sdk.cache import cache_dir
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError, OptionError
from hwdeploy.contract.model import Model, load_model
from hwdeploy.contract.receipt import OpPlacement, Receipt

from hwdeploy_nvidia import engines
from hwdeploy_nvidia.config import ConfigReport, build_config
from hwdeploy_nvidia.discovery import BACKEND, FIX_TRT, fix_wheel
from hwdeploy_nvidia.options import GpuOptions, input_specs, parse_options, static_shape_ranges
from hwdeploy_nvidia.programs import engine_files, trt_summary

OUTSIDE_TRT = "outside TensorRT: Paddle's native CUDA kernel"


@dataclass
class TensorRTState:
    """How TensorRT is used by one predictor, and what can be seen of it."""

    mode: str  # "subgraph" | "pir-trt" | "prebuilt" (program already holds engines) | "off"
    required: bool  # tensorrt=True: no engine means fallback
    reason: str = ""  # why it is off, when it is
    optim_dir: Path | None = None
    program: Path | None = None  # the program whose ops we count (converted/optimized)
    shape_file: Path | None = None
    artifact_dir: Path | None = None  # pir-trt: the converted program + its engine files
    outside: dict[str, int] = field(default_factory=dict)

    @property
    def engines(self) -> int | None:
        if self.mode == "off":
            return 0
        if self.mode == "subgraph":
            return engines.count_subgraph_engines(self.optim_dir if self.optim_dir else None)
        return trt_summary(self.program)["engines"] if self.program else None


def gpu_actual_device(config) -> str:
    """The device Paddle reports this config runs on: ``gpu:N`` only if ``config.use_gpu()`` says so."""
    return f"gpu:{config.gpu_device_id()}" if config.use_gpu() else "cpu:0"


class NvidiaPredictor(pi.PaddleInferencePredictor):
    """Paddle Inference on an NVIDIA GPU; ``trt`` and ``config_report`` are the evidence its receipt carries."""

    backend = BACKEND

    def __init__(self, model: Model, device: Device, config, report: ConfigReport, trt: TensorRTState,
                 opts: GpuOptions, versions: Mapping[str, str] | None = None):
        self.config_report = report
        self.trt = trt
        self.gpu_options = opts
        self._versions = dict(versions or {})
        super().__init__(model, device, config, actual_device=gpu_actual_device, receipt_extra=self._add_evidence,
                         options=opts.describe(), backend=BACKEND, check_finite=opts.check_finite)
        self._inspect_program()

    def _inspect_program(self) -> None:
        """After creation: prefer the program Paddle optimized (saved to the optim dir) for op counts."""
        optimized = Path(self.config_report.optim_cache_dir or "") / "_optimized.json"
        if self.trt.mode == "off" and self.config_report.optim_cache_dir and optimized.is_file():
            self.trt.program = optimized
        if self.trt.program is not None and self.trt.mode != "subgraph":
            self.trt.outside = trt_summary(self.trt.program)["outside"]

    def _add_evidence(self, receipt: Receipt) -> None:
        receipt.runtime_versions.update({k: v for k, v in self._versions.items() if v})
        receipt.evidence.extend(self.config_report.evidence)
        receipt.fallback_evidence.extend(self.config_report.fallback)
        trt, where = self.trt, receipt.actual
        count = trt.engines
        if trt.mode == "off":
            receipt.evidence.append(f"TensorRT off ({trt.reason or 'tensorrt=False'}): every op runs on Paddle's"
                                    f" native kernels")
        elif count is None:
            receipt.evidence.append(f"TensorRT {trt.mode}: engine count unknown (engine_cache=False keeps engines in"
                                    f" memory only)")
        else:
            receipt.evidence.append(f"TensorRT {trt.mode}: {count} engine(s)"
                                    + (f" in {trt.program}" if trt.program else f" serialized in {trt.optim_dir}")
                                    + (f" ({trt.reason})" if trt.reason else ""))
            if count:
                receipt.ops.append(OpPlacement("tensorrt_engine", where, count))
            elif trt.required:
                receipt.fallback_evidence.append(
                    "tensorrt=True but Paddle built 0 TensorRT engines: every op runs on Paddle's native kernels"
                    f" (raise workspace_size, lower min_subgraph_size or check disable_ops; options {trt.mode})")
            else:
                receipt.evidence.append("TensorRT built 0 engines: every op runs on Paddle's native kernels")
        for op, n in trt.outside.items():
            receipt.ops.append(OpPlacement(op, where, n, OUTSIDE_TRT if trt.mode != "off" else ""))
        receipt.ops_known = False  # counted from the program file; Paddle may still fuse at run time
        if trt.outside and trt.mode != "off":
            receipt.evidence.append(f"{sum(trt.outside.values())} op(s) outside TensorRT on {where}: "
                                    + ", ".join(f"{op} x{n}" for op, n in trt.outside.items()))


def _versions(device: Device) -> dict[str, str]:
    wanted = ("paddle_cuda", "cudnn", "tensorrt", "driver", "cuda_driver")
    return {k: device.versions[k] for k in wanted if device.versions.get(k)}


def _refusal(report: ConfigReport) -> str:
    parts = []
    for method, error in report.refused.items():
        hint = ""
        if method == "enable_tensorrt_engine" or "TENSORRT" in error.upper():
            hint = (f" -> this Paddle has no TensorRT: install a paddlepaddle-gpu wheel built with TensorRT,"
                    f" or {FIX_TRT}")
        elif method == "enable_use_gpu":
            hint = f" -> {fix_wheel(pi.paddle_version())}"
        parts.append(f"{method}(): {error}{hint}")
    return "Paddle refused the GPU configuration: " + "; ".join(parts)


def _native_dir(model: Model, opts: GpuOptions, device: Device, kind: str) -> Path | None:
    # PIR programs: keep Paddle's optimized program next to the cache so the receipt can count its ops.
    if model.format != "pir":
        return None
    return cache_dir("nvidia", kind, engines.engine_key(model, opts, device, kind))


def _device(device: Device | str) -> Device:
    if isinstance(device, Device):
        return device
    import hwdeploy
    from hwdeploy.contract.records import DeviceSpec

    spec = DeviceSpec.parse(device)
    found = [d for d in hwdeploy.devices() if d.backend == BACKEND and spec.matches(d)]
    if not found:
        raise ValueError(f"the nvidia plugin reports no device {device!r}")
    return found[0]


def create_gpu_predictor(model, device: Device | str, options: Mapping[str, Any] | GpuOptions | None = None, *,
                         engine_dir: Path | None = None) -> NvidiaPredictor:
    """Build a GPU predictor and return it with its evidence, *without* judging it.

    This is the plugin's predictor factory, public so callers and tests can
    inspect what Paddle did: on a CPU-only Paddle wheel ``enable_use_gpu``
    silently becomes the CPU, and the returned predictor's receipt says so
    (``actual == "cpu:0"``, ``config.use_gpu() == False`` in its fallback
    evidence). ``hwdeploy.predictor(..., device="gpu")`` never hands such a
    predictor out: the plugin's hook raises :class:`hwdeploy.FallbackError`.

    ``device`` is a :class:`hwdeploy.Device` or a string (``"gpu:0"``) looked
    up in discovery, available or not. ``engine_dir`` (legacy programs)
    overrides the optim cache dir the subgraph engines are serialized into
    (used by ``hwdeploy convert``).
    """
    model, device = load_model(model), _device(device)
    opts = parse_options(options or {}, model)
    status = device.details.get("tensorrt") or {}
    path = "subgraph" if model.format == "legacy" else "pir"
    prebuilt = model.format == "pir" and trt_summary(model.program)["engines"] > 0
    if prebuilt:
        mode, reason = "prebuilt", "engines already in the program: precision and shape options do not apply"
    elif opts.tensorrt is False:
        mode, reason = "off", "tensorrt=False"
    elif status.get(path) is False:
        reason = status.get("reason") or "TensorRT is not usable with this Paddle"
        if opts.tensorrt:
            raise BackendError(f"tensorrt=True but {reason}")
        mode = "off"
    else:
        mode, reason = ("subgraph" if path == "subgraph" else "pir-trt"), ""
    if mode == "pir-trt" and opts.shape_mode == "static":
        # PIR-TensorRT needs a range for every dynamic axis: a dynamic batch axis gets 1..max_batch_size,
        # anything else must come from the caller. (Legacy subgraphs keep Paddle-TRT's static mode.)
        try:
            static_shape_ranges(input_specs(model) or [], opts.max_batch_size)
        except ValueError as exc:
            if opts.tensorrt:
                raise OptionError(f"gpu backend: {exc}") from None
            mode, reason = "off", f"no shape ranges for TensorRT: {exc}"
    if mode == "off" and opts.precision == "int8":
        raise BackendError(f"precision='int8' needs TensorRT, but {reason}")
    trt = TensorRTState(mode=mode, required=bool(opts.tensorrt), reason=reason)
    target = model

    if mode == "off" and model.format == "legacy":
        trt.program = model.program  # no optimized-program dump for legacy programs: list the source ops
    if mode == "prebuilt":
        missing = [f for f in engine_files(model.program) if not Path(f).is_file()]
        if missing:
            raise BackendError(f"{model.program} refers to missing TensorRT engine file(s) {missing[:3]}: rebuild it"
                               f" (hwdeploy.convert(..., 'tensorrt', refresh=True))")
        trt.program = model.program
    if mode == "pir-trt":
        converted_dir = engines.ensure_pir_trt(model, opts, device)
        target = load_model(Path(converted_dir) / "model.json")
        trt.program, trt.artifact_dir = target.program, Path(converted_dir)
    if mode in ("off", "prebuilt", "pir-trt"):
        # Without TensorRT, Paddle's optimized program is saved so the receipt can list its ops; with
        # engines, the converted program already says what runs where.
        optim_dir = _native_dir(target, opts, device, "native") if mode == "off" else None
        # (Saved once per key: the same key means the same program, and rewriting the parameters on every
        # creation would make many short-lived predictors slow.)
        save = optim_dir is not None and not (optim_dir / "_optimized.json").is_file()
        # With engines in the program, TensorRT owns the precision: no Paddle mixed-precision pass around them.
        native = opts if mode == "off" else replace(opts, precision="fp32")
        config, report = build_config(target, native, device.index, tensorrt=False, optim_dir=optim_dir,
                                      save_optimized=save)
    else:  # Paddle-TensorRT subgraphs in Paddle Inference (legacy programs)
        shape_file = shape_ranges = None
        if opts.shape_mode == "tuned":
            shape_file = engines.collect_shape_ranges(model, opts, device)
        elif opts.shape_mode == "explicit":
            shape_ranges = opts.shapes
        calibrating = opts.precision == "int8" and opts.calibration_inputs is not None
        optim_dir = engine_dir
        if optim_dir is None and (opts.engine_cache or calibrating):
            optim_dir = cache_dir("nvidia", "subgraph", engines.engine_key(model, opts, device, "subgraph"))
        if calibrating:
            engines.calibrate_int8(model, opts, device, optim_dir, shape_file, shape_ranges)
        config, report = build_config(model, opts, device.index, tensorrt=True, optim_dir=optim_dir,
                                      shape_file=shape_file, shape_ranges=shape_ranges, calibrate=calibrating)
        trt.optim_dir, trt.shape_file = optim_dir, shape_file
    if report.refused:
        raise BackendError(_refusal(report))
    return NvidiaPredictor(model, device, config, report, trt, opts, versions=_versions(device))

