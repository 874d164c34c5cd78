"""The options ``hwdeploy.predictor(model, device="gpu", **options)`` accepts, checked before Paddle sees them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from hwdeploy.contract.model import Model, TensorSpec, model_io
from hwdeploy.errors import OptionError
from hwdeploy.sdk.options import CHECK_FINITE, THREADS, Option, OptionSchema

PRECISIONS = ("fp32", "fp16", "int8")
Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]  # (min, opt, max)


@dataclass
class GpuOptions:
    """Validated predictor options for the ``gpu`` device.

    - ``precision``: ``"fp32"`` | ``"fp16"`` | ``"int8"``. int8 needs TensorRT and
      either ``calibration_inputs`` (legacy programs: Paddle-TRT calibration) or
      a quantized model (PaddleSlim output with quantize/dequantize ops).
    - ``tensorrt``: ``None`` (default: use TensorRT when this Paddle has it, and
      say in the receipt when it does not), ``True`` (require it: fail if no
      engine is built), ``False`` (Paddle's native CUDA kernels only).
    - ``min_subgraph_size``, ``workspace_size`` (bytes), ``max_batch_size``,
      ``optimization_level`` (TensorRT builder level 0-5), ``disable_ops``
      (op types kept out of TensorRT), ``cuda_graph``.
    - Dynamic shapes, one of: ``shapes={"x": (min, opt, max)}`` (explicit
      ranges), or ``sample_inputs=[batch, ...]`` (two-pass: Paddle collects
      the ranges from real inputs, then builds with the tuned ranges). With
      neither, a dynamic batch axis gets the range 1..``max_batch_size``
      (default 1, or the top of ``model.metadata["batch_range"]``); other
      dynamic axes then keep TensorRT off (say so in the receipt) unless
      ``tensorrt=True``, which raises instead.
    - ``engine_cache``: serialize engines into hwdeploy's cache dir and reuse them.
    - ``memory_pool_mb``, ``threads``, ``ir_optim``, ``check_finite``, ``build_timeout`` (s).
    """

    precision: str = "fp32"
    tensorrt: bool | None = None
    min_subgraph_size: int = 3
    workspace_size: int = 1 << 30
    max_batch_size: int = 1
    optimization_level: int | None = None
    disable_ops: tuple[str, ...] = ()
    cuda_graph: bool = False
    shapes: dict[str, ShapeRange] | None = None
    sample_inputs: list[list[np.ndarray]] | None = field(default=None, repr=False)
    calibration_inputs: list[list[np.ndarray]] | None = field(default=None, repr=False)
    engine_cache: bool = True
    memory_pool_mb: int = 256
    threads: int | None = None
    ir_optim: bool = True
    check_finite: bool = True
    build_timeout: float = 1800.0

    @property
    def shape_mode(self) -> str:
        """``"tuned"`` (collected from sample inputs), ``"explicit"`` (min/opt/max given) or ``"static"``."""
        if self.sample_inputs is not None:
            return "tuned"
        return "explicit" if self.shapes else "static"

    def key(self) -> dict[str, Any]:
        """Everything that changes the built engines, JSON-able (arrays by content hash)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("sample_inputs", "calibration_inputs"):
                value = digest_batches(value) if value is not None else None
            elif f.name in ("tensorrt", "engine_cache", "threads", "check_finite", "build_timeout", "memory_pool_mb"):
                continue  # these do not change what gets built
            elif f.name == "shapes" and value:
                value = {k: [list(s) for s in v] for k, v in sorted(value.items())}
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def describe(self) -> dict[str, Any]:
        """For receipts: the options, with sample arrays summarised."""
        data = self.key()
        for name in ("sample_inputs", "calibration_inputs"):
            batches = getattr(self, name)
            if batches is not None:
                data[name] = {"batches": len(batches), "sha256": data[name]}
        return data


def digest_batches(batches: Sequence[Sequence[np.ndarray]]) -> str:
    h = hashlib.sha256()
    for batch in batches:
        for array in batch:
            array = np.ascontiguousarray(array)
            h.update(f"{array.dtype}{array.shape}".encode())
            h.update(array.tobytes())
        h.update(b"|")
    return h.hexdigest()[:24]


def parse_shape(text: str) -> Shape:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``."""
    try:
        return tuple(int(p) for p in text.strip().lower().split("x"))
    except ValueError:
        raise ValueError(f"bad shape {text!r}: expected dims joined by 'x', e.g. 1x3x224x224") from None


def parse_shapes(value: Any) -> dict[str, ShapeRange]:
    """Explicit dynamic-shape ranges from ``{"x": (min, opt, max)}`` or ``"x:1x8,4x8,8x8;y:..."`` (CLI form)."""
    if isinstance(value, str):
        parsed = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            name, sep, ranges = part.partition(":")
            shapes = ranges.split(",")
            if not sep or len(shapes) != 3:
                raise ValueError(f"bad shapes entry {part!r}: expected NAME:MIN,OPT,MAX like x:1x8,4x8,8x8")
            parsed[name.strip()] = tuple(parse_shape(s) for s in shapes)
        value = parsed
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"gpu option shapes must map input names to (min, opt, max) shapes, got {value!r}")
    out: dict[str, ShapeRange] = {}
    for name, triple in value.items():
        if isinstance(triple, Mapping):
            triple = (triple.get("min"), triple.get("opt"), triple.get("max"))
        if not isinstance(triple, (list, tuple)) or len(triple) != 3:
            raise ValueError(f"shapes[{name!r}] must be (min, opt, max), got {triple!r}")
        try:
            lo, opt, hi = (tuple(int(d) for d in s) for s in triple)
        except (TypeError, ValueError):
            raise ValueError(f"shapes[{name!r}]: shapes must be sequences of integers, got {triple!r}") from None
        if not (len(lo) == len(opt) == len(hi)):
            raise ValueError(f"shapes[{name!r}]: min/opt/max have different ranks {list(lo)} {list(opt)} {list(hi)}")
        if any(d < 1 for d in lo):
            raise ValueError(f"shapes[{name!r}]: dimensions must be >= 1, got min {list(lo)}")
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ValueError(f"shapes[{name!r}]: need min <= opt <= max on every axis, got {list(lo)} {list(opt)}"
                             f" {list(hi)}")
        out[str(name)] = (lo, opt, hi)
    return out


def _batches(name: str, value: Any, specs: list[TensorSpec] | None) -> list[list[np.ndarray]]:
    """Sample/calibration batches: a list of batches, each a list (model input order) or dict of arrays."""
    if isinstance(value, np.ndarray) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"gpu option {name} must be a non-empty list of input batches (each a list or dict of arrays)")
    out = []
    for i, batch in enumerate(value):
        if isinstance(batch, np.ndarray):
            batch = [batch]
        if isinstance(batch, Mapping):
            if specs is None:
                raise ValueError(f"{name}[{i}]: pass a list of arrays (input order) for this model")
            missing = [s.name for s in specs if s.name not in batch]
            if missing or len(batch) != len(specs):
                raise ValueError(f"{name}[{i}]: inputs must be exactly {[s.name for s in specs]}, got {sorted(batch)}")
            batch = [batch[s.name] for s in specs]
        arrays = [np.ascontiguousarray(a) for a in batch]
        if specs is not None:
            if len(arrays) != len(specs):
                raise ValueError(f"{name}[{i}]: model takes {len(specs)} input(s), batch has {len(arrays)}")
            for spec, array in zip(specs, arrays):
                if spec.dtype and array.dtype != np.dtype(spec.dtype):
                    raise ValueError(f"{name}[{i}] input {spec.name!r}: dtype {array.dtype} != model's {spec.dtype}")
                if spec.shape and (array.ndim != len(spec.shape) or any(
                        w >= 0 and g != w for g, w in zip(array.shape, spec.shape))):
                    raise ValueError(f"{name}[{i}] input {spec.name!r}: shape {list(array.shape)} does not fit the"
                                     f" model's {list(spec.shape)}")
                if array.size == 0:
                    raise ValueError(f"{name}[{i}] input {spec.name!r}: empty array")
        out.append(arrays)
    return out


#: The declared form of :class:`GpuOptions` (types, ranges, choices: ``hwdeploy options`` prints it); the
#: structured ones (shapes, batches, op lists) are parsed further by :func:`parse_options`.
OPTIONS = OptionSchema("gpu backend", [
    Option("precision", str, "fp32", "fp32, fp16 or int8 (int8: TensorRT with calibration_inputs or a quantized"
           " model)", choices=PRECISIONS, nullable=False),
    Option("tensorrt", bool, None, "None: TensorRT when this Paddle has it (the receipt says when not); True: require"
           " it; False: Paddle's native CUDA kernels only"),
    Option("min_subgraph_size", int, 3, "smallest op run TensorRT takes", minimum=1, maximum=10_000, nullable=False),
    Option("workspace_size", int, 1 << 30, "TensorRT builder workspace, bytes", minimum=1 << 20, maximum=1 << 40,
           nullable=False),
    Option("max_batch_size", int, 1, "top of the dynamic batch range (default: the model's batch_range, else 1)",
           minimum=1, maximum=1 << 16, nullable=False),
    Option("optimization_level", int, None, "TensorRT builder optimisation level", minimum=0, maximum=5),
    Option("disable_ops", (str, list, tuple), None, "op types kept out of TensorRT"),
    Option("cuda_graph", bool, False, "capture the run in a CUDA graph", nullable=False),
    Option("shapes", (dict, str), None, "dynamic-shape ranges {input: (min, opt, max)} or 'x:1x8,4x8,8x8;y:...'"),
    Option("sample_inputs", object, None, "input batches Paddle collects shape ranges from (two-pass build)"),
    Option("calibration_inputs", object, None, "precision='int8': batches for Paddle-TRT calibration"),
    Option("engine_cache", bool, True, "serialize engines into hwdeploy's cache and reuse them", nullable=False),
    Option("memory_pool_mb", int, 256, "initial GPU memory pool, MB", minimum=1, maximum=1 << 20, nullable=False),
    THREADS,
    Option("ir_optim", bool, True, "Paddle's graph optimisation passes", nullable=False),
    CHECK_FINITE,
    Option("build_timeout", (int, float), 1800.0, "seconds an engine build may take", minimum=0.001,
           maximum=7 * 86400, nullable=False),
])
OPTION_NAMES = tuple(f.name for f in fields(GpuOptions))


def input_specs(model: Model) -> list[TensorSpec] | None:
    """The model's inputs, read without Paddle (both formats through :mod:`hwdeploy.sdk.paddle_format`)."""
    if model.format == "legacy":
        from hwdeploy.sdk.paddle_format import legacy_inputs

        return legacy_inputs(model.program) or None
    io = model_io(model)
    return io[0] if io else None


def parse_options(options: Mapping[str, Any], model: Model | None = None, owner: str = "gpu backend") -> GpuOptions:
    """Check ``options`` (types, ranges, names against the model's inputs) and return :class:`GpuOptions`.

    Every mistake is an :class:`OptionError` (a ``ValueError``) that starts with ``owner``.
    """
    if isinstance(options, GpuOptions):
        return options
    try:
        return _parse(options, model)
    except OptionError:
        raise
    except ValueError as exc:
        raise OptionError(f"{owner}: {exc}") from None


def _parse(options: Mapping[str, Any], model: Model | None) -> GpuOptions:
    settings = OPTIONS.check(options)  # names, types, ranges, choices: OptionError (a ValueError)
    specs = input_specs(model) if model is not None else None
    structured = {"disable_ops", "shapes", "sample_inputs", "calibration_inputs"}
    o = GpuOptions(**{name: value for name, value in settings.items() if name not in structured})
    o.build_timeout = float(settings["build_timeout"])
    if settings["disable_ops"] is not None:
        value = settings["disable_ops"]
        ops = [value] if isinstance(value, str) else value
        if not all(isinstance(x, str) and x for x in ops):
            raise ValueError(f"gpu option disable_ops must be a list of op type names, got {value!r}")
        o.disable_ops = tuple(ops)
    if settings["shapes"] is not None:
        o.shapes = parse_shapes(settings["shapes"])
    for name in ("sample_inputs", "calibration_inputs"):
        if settings[name] is not None:
            setattr(o, name, _batches(name, settings[name], specs))
    batch_range = (model.metadata.get("batch_range") if model is not None else None) or None
    if "max_batch_size" not in options and batch_range:
        o.max_batch_size = int(batch_range[-1])  # e.g. the zoo's (1, 8): build engines for its whole batch range
    if o.shapes and o.sample_inputs is not None:
        raise ValueError("gpu options shapes and sample_inputs are two ways to give dynamic-shape ranges: pass one")
    if o.shapes and specs is not None:
        names = {s.name: s for s in specs}
        unknown_inputs = sorted(set(o.shapes) - set(names))
        if unknown_inputs:
            raise ValueError(f"shapes names {unknown_inputs} are not model inputs {sorted(names)}")
        for name, (lo, _, _) in o.shapes.items():
            spec = names[name]
            if spec.shape and len(spec.shape) != len(lo):
                raise ValueError(f"shapes[{name!r}] has rank {len(lo)} but the model input has rank {len(spec.shape)}"
                                 f" {list(spec.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, lo)):
                if want >= 0 and any(s[axis] != want for s in o.shapes[name]):
                    raise ValueError(f"shapes[{name!r}] axis {axis} is fixed to {want} by the model")
    if o.precision == "int8":
        if o.tensorrt is False:
            raise ValueError("precision='int8' needs TensorRT (tensorrt=False runs Paddle's native kernels, fp32/fp16"
                             " only)")
        if o.calibration_inputs is None and not is_quantized(model):
            raise ValueError("precision='int8' needs calibration_inputs=[batch, ...] (Paddle-TRT calibration, legacy"
                             " .pdmodel programs) or a quantized model (PaddleSlim output with quantize_linear ops)")
    if o.calibration_inputs is not None and o.precision != "int8":
        raise ValueError("calibration_inputs only apply to precision='int8'")
    return o


QUANT_OPS = ("quantize_linear", "dequantize_linear", "fake_quantize", "fake_dequantize", "fake_channel_wise")


def is_quantized(model: Model | None) -> bool:
    """True when the program carries quantization ops (PaddleSlim PTQ/QAT output)."""
    if model is None:
        return False
    from hwdeploy_nvidia.programs import op_counts

    return any(any(q in op for q in QUANT_OPS) for op in op_counts(model.program))


def static_shape_ranges(specs: list[TensorSpec], max_batch_size: int) -> dict[str, ShapeRange]:
    """Ranges for models whose only dynamic axis is the batch: 1..max_batch_size (opt = max)."""
    out = {}
    for spec in specs:
        dynamic = [axis for axis, d in enumerate(spec.shape) if d < 0]
        if any(axis != 0 for axis in dynamic):
            raise ValueError(f"input {spec.name!r} has dynamic axes {dynamic} (shape {list(spec.shape)}): pass"
                             f" shapes={{'{spec.name}': (min, opt, max)}} or sample_inputs=[...] so TensorRT knows"
                             f" the ranges")
        lo = tuple(1 if d < 0 else d for d in spec.shape)
        hi = tuple(max_batch_size if d < 0 else d for d in spec.shape)
        out[spec.name] = (lo, hi, hi)
    return out
