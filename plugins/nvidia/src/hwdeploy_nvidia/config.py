"""Building the ``paddle.inference.Config`` for a GPU predictor, and reading back what Paddle made of it.

Every Config call is recorded with its arguments, and every getter Paddle
offers is read afterwards: the receipt states what Paddle *reports*, not what
was asked. Paddle refusing a call (e.g. TensorRT on a wheel built without it)
is recorded per call, so a caller can say exactly which step failed and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.contract.model import Model

from hwdeploy_nvidia.options import GpuOptions, ShapeRange

#: Config getters read back after configuration (those this Paddle has).
GETTERS = ("use_gpu", "gpu_device_id", "memory_pool_init_size_mb", "ir_optim", "tensorrt_engine_enabled",
           "tensorrt_precision_mode", "tensorrt_dynamic_shape_enabled", "tuned_tensorrt_dynamic_shape",
           "trt_allow_build_at_runtime", "shape_range_info_collected", "shape_range_info_path",
           "tensorrt_optimization_level")
PRECISION_NAMES = {"fp32": "Float32", "fp16": "Half", "int8": "Int8"}


@dataclass
class ConfigReport:
    """What was asked of a Config, what Paddle refused, and what the Config reports afterwards."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)  # facts meaning "not (all) on the GPU / TensorRT"
    optim_cache_dir: str | None = None
    shape_range_file: str | None = None

    def call(self, config, method: str, *args: Any, **kwargs: Any) -> bool:
        """Call ``config.method``; record it, and Paddle's refusal if any. True when it went through."""
        shown = {f"arg{i}": _plain(a) for i, a in enumerate(args)}
        shown.update({k: _plain(v) for k, v in kwargs.items()})
        self.calls.append((method, shown))
        fn = getattr(config, method, None)
        if fn is None:
            self.refused[method] = f"paddle {pi.paddle_version()} has no paddle.inference.Config.{method}()"
            return False
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # Paddle raises RuntimeError/ValueError with C++ context
            self.refused[method] = first_line(exc)
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"calls": [[m, a] for m, a in self.calls], "refused": dict(self.refused),
                "reported": dict(self.reported), "evidence": list(self.evidence), "fallback": list(self.fallback),
                "optim_cache_dir": self.optim_cache_dir, "shape_range_file": self.shape_range_file}


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("---")]
    lines = [ln for ln in lines if not ln.startswith(("C++ Traceback", "Error Message", "[Hint"))] or lines
    return (lines or [type(exc).__name__])[0][:400]


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value)


def precision_enum(precision: str):
    return getattr(pi.inference_module().PrecisionType, PRECISION_NAMES[precision])


def read_back(config) -> dict[str, Any]:
    """Every getter in :data:`GETTERS` this Config has, with enum values turned into their names."""
    out = {}
    for name in GETTERS:
        getter = getattr(config, name, None)
        if getter is None:
            continue
        try:
            value = getter()
        except Exception as exc:
            out[name] = f"<error: {first_line(exc)}>"
            continue
        out[name] = _plain(value) if not isinstance(value, (bool, int, float, str)) else value
    return out


def supports_cuda_graph_arg() -> bool:
    doc = getattr(pi.inference_module().Config.enable_tensorrt_engine, "__doc__", "") or ""
    return "use_cuda_graph" in doc


def build_config(model: Model, opts: GpuOptions, device_id: int, *, tensorrt: bool, stage: str = "final",
                 optim_dir: Path | None = None, shape_file: Path | None = None,
                 shape_ranges: dict[str, ShapeRange] | None = None, save_optimized: bool = False,
                 calibrate: bool = False):
    """A Config for ``model`` on CUDA device ``device_id``; returns ``(config, ConfigReport)``.

    - ``stage="collect"``: first pass of the tuned dynamic-shape flow (no
      TensorRT; Paddle records every tensor's shape range into ``shape_file``).
    - ``tensorrt``: add TensorRT subgraphs with ``opts``' precision, sizes and
      cache; dynamic shapes from ``shape_file`` (tuned) or ``shape_ranges``.
    - ``optim_dir``: Paddle's optim cache dir (serialized engines with
      ``use_static``, calibration tables, the optimized program if ``save_optimized``).

    Nothing raises for a refused call: see ``report.refused``.
    """
    if stage not in ("final", "collect"):
        raise ValueError(f"stage must be 'final' or 'collect', got {stage!r}")
    report = ConfigReport()
    # oneDNN is a CPU library: keep it off so a silent CPU fallback is not also a fast one that hides.
    config = pi.make_config(model, threads=opts.threads, ir_optim=opts.ir_optim, onednn=False, optim_cache=False)
    native_precision = "fp16" if (opts.precision == "fp16" and not tensorrt and stage == "final") else "fp32"
    report.call(config, "enable_use_gpu", opts.memory_pool_mb, device_id, precision_enum(native_precision))

    if stage == "collect":
        report.shape_range_file = str(shape_file)
        report.call(config, "collect_shape_range_info", str(shape_file))
    elif tensorrt:
        kwargs: dict[str, Any] = dict(workspace_size=opts.workspace_size, max_batch_size=opts.max_batch_size,
                                      min_subgraph_size=opts.min_subgraph_size,
                                      precision_mode=precision_enum(opts.precision),
                                      use_static=bool(optim_dir is not None and opts.engine_cache),
                                      use_calib_mode=bool(calibrate))
        if opts.cuda_graph:
            if supports_cuda_graph_arg():
                kwargs["use_cuda_graph"] = True
            else:
                report.refused["use_cuda_graph"] = (f"paddle {pi.paddle_version()}: enable_tensorrt_engine() has no"
                                                    f" use_cuda_graph argument")
        report.call(config, "enable_tensorrt_engine", **kwargs)
        if opts.optimization_level is not None:
            report.call(config, "set_tensorrt_optimization_level", opts.optimization_level)
        if opts.disable_ops:
            report.call(config, "exp_disable_tensorrt_ops", list(opts.disable_ops))
        if shape_file is not None:
            report.shape_range_file = str(shape_file)
            report.call(config, "enable_tuned_tensorrt_dynamic_shape", str(shape_file), True)
        elif shape_ranges:
            # Paddle's argument order is (min, max, opt).
            report.call(config, "set_trt_dynamic_shape_info",
                        {k: list(v[0]) for k, v in shape_ranges.items()},
                        {k: list(v[2]) for k, v in shape_ranges.items()},
                        {k: list(v[1]) for k, v in shape_ranges.items()})
    if optim_dir is not None:
        report.optim_cache_dir = str(optim_dir)
        report.call(config, "set_optim_cache_dir", str(optim_dir))
        if save_optimized:
            report.call(config, "enable_save_optim_model", True)

    report.reported = read_back(config)
    _judge(report, opts, device_id, tensorrt and stage == "final")
    return config, report


def _judge(report: ConfigReport, opts: GpuOptions, device_id: int, tensorrt: bool) -> None:
    """Turn what the Config reports into evidence, and into fallback evidence where it is not the GPU."""
    got = report.reported
    asked = next((a for m, a in report.calls if m == "enable_use_gpu"), {})
    shown = ", ".join(str(v) for v in asked.values())
    if got.get("use_gpu") is False:
        report.fallback.append(f"config.use_gpu() == False after enable_use_gpu({shown}): Paddle runs this model on"
                               f" the CPU (this Paddle build cannot use CUDA)")
    elif got.get("use_gpu") and got.get("gpu_device_id") not in (None, device_id):
        report.fallback.append(f"config.gpu_device_id() == {got.get('gpu_device_id')}, requested {device_id}")
    else:
        report.evidence.append(f"config.use_gpu() == {got.get('use_gpu')}, config.gpu_device_id() =="
                               f" {got.get('gpu_device_id')}")
    if tensorrt and "enable_tensorrt_engine" not in report.refused:
        if got.get("tensorrt_engine_enabled") is False:
            report.fallback.append("config.tensorrt_engine_enabled() == False after enable_tensorrt_engine(): no"
                                   " TensorRT subgraphs will be built")
        want = PRECISION_NAMES[opts.precision]
        mode = str(got.get("tensorrt_precision_mode", ""))
        if got.get("tensorrt_engine_enabled") and mode and mode.split(".")[-1] != want:
            report.fallback.append(f"config.tensorrt_precision_mode() == {mode}, requested {want}")
        elif got.get("tensorrt_engine_enabled"):
            report.evidence.append(f"config.tensorrt_engine_enabled() == True, tensorrt_precision_mode() == {mode}")
