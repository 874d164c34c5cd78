"""Paddle 3 PIR program (.json + .pdiparams) -> Paddle.js model (model.json + chunk_N.dat).

Pure Python + numpy: the program is read with :mod:`hwdeploy.sdk.paddle_format`, no
Paddle import. Three steps:

1. **Lowering.** Each PIR op goes through a handler that infers static shapes
   (batch fixed, default 1; checked against every static dim Paddle recorded),
   folds constants (parameters, ``full``, ``full_int_array``, shape arithmetic,
   reshapes/transposes of weights) and emits Paddle.js ops. Reshape-like ops
   only create *views*; a ``reshape2`` copy is emitted when an op needs the
   data in another shape.
2. **Legalisation** for what the shipped shaders (paddlejs-core 2.2.0,
   paddlejs-backend-webgl 1.2.9: read from the bundles, which differ from the
   repository's master) really compute, each checked against Paddle in the tests:

   - attributes Paddle 3 no longer writes: ``fuse_relu``, relu6 ``threshold``
     (without it the shader clips at 1.0: wrong numbers, no error);
   - explicit paddings instead of SAME/VALID; conv paddings ``[0, 1]`` (which
     the shader rewrites to ``[0, 0]``) through pad3d; transposed-conv paddings
     it cannot express as a crop of the unpadded output;
   - broadcasting: legacy ``axis`` form for add/sub, same-rank form for mul/div
     (their shaders clamp), operands swapped or negated, constants expanded;
     scalar constants become ``scale`` ops;
   - softmax shifted by its max (the shader overflows above ~88) and moved to
     the last axis; global/adaptive max pooling with an explicit window (the
     shader returns argmax indices for global max pooling); adaptive average
     pooling as a matmul (no adaptive shader in the bundle);
   - activations as ``fuse_opt`` (``leaky_relu`` and ``exp`` have no working
     standalone op; fused ``tanh`` does not compile: its own op); sqrt as
     ``pow 0.5``; silu, gelu(tanh), layer_norm, square, pow 2/3 decomposed;
   - slices and splits as crops (pad3d with negative paddings on a 4-D view);
   - one reader of the input (Paddle.js uploads a new input only for the first
     op reading it); 0-d shapes as ``[1]``; at most 4-D static float32 tensors;
     a single input named ``image`` and a single output. A model with a second
     input or an NMS gets a *host stage* (:class:`HostStage`,
     :mod:`hwdeploy_webgl.host`): the page returns the tensors those ops read,
     packed into its one output, and the host computes the rest.
3. **Optimisation** on the emitted graph: dead ops removed (the output must be
   the last op run), conv + bias add fused, conv + batch_norm folded,
   activations fused into their producer.

Anything the shaders cannot compute exactly raises
:class:`hwdeploy.errors.UnsupportedOpsError` naming every such op with the
reason, never a model that returns wrong numbers.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np

from hwdeploy.errors import ConversionError, OptionError, UnsupportedOpsError
from hwdeploy.sdk.paddle_format import PirOp, load_pir_program, read_params
from hwdeploy_webgl import host as host_stage

#: Bump when the converter's output changes: cached artifacts of an older revision are converted again.
CONVERTER_REVISION = 4
#: The browser-delivery guidance of the Paddle.js docs: keep models under ~10 MB.
SIZE_GUIDANCE_BYTES = 10_000_000
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
EMBEDDING_FILE = "embedding.npy"  # the table of a model fed through an embedding (looked up on the host)
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
#: Bounds on what a program can make the converter build: a filled constant (pd_op.full, full_with_tensor) and
#: the steps a GRU is unrolled over (about 17 Paddle.js ops each).
MAX_FILLED_ELEMENTS = 1 << 26
MAX_UNROLLED_STEPS = 1024


class Unsupported(Exception):
    """An op (or one configuration of it) the Paddle.js WebGL shaders cannot compute exactly."""


class NotJudgeable(Exception):
    """An op whose support depends on an input an unsupported op before it produced: it is not listed."""


@dataclass
class Value:
    """A PIR value during lowering: static shape plus a constant, a Paddle.js var, or a list."""

    shape: tuple[int, ...] = ()
    dtype: str = "float32"
    const: np.ndarray | None = None
    var: str | None = None  # Paddle.js var holding the data (its registered shape may differ: a view)
    items: list["Value"] | None = None  # builtin.combine
    poison: bool = False  # produced by an unsupported op
    shape_known: bool = True  # False for a poison value whose program type has dynamic dims besides the batch
    host_ref: int | None = None  # computed by the host stage (see HostStage): its reference there
    ids: bool = False  # the model's integer input: only an embedding may read it (looked up on the host)

    @property
    def host(self) -> bool:
        return self.host_ref is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class ConvertedModel:
    model: dict[str, Any]
    weights: np.ndarray  # float32, in the order Paddle.js assigns them to persistable vars
    input: dict[str, Any]
    output: dict[str, Any]
    passes: Counter = field(default_factory=Counter)
    pir_ops: Counter = field(default_factory=Counter)
    #: The host stage's program (:mod:`hwdeploy_webgl.host`), or None when the page computes every output.
    host: dict[str, Any] | None = None
    #: The embedding table the host looks integer ids up in before the page runs (see ``input["embedding"]``).
    embedding: np.ndarray | None = None


#: Ops Paddle.js has no kernel for that a model may still end with: run by the host stage (-> the receipt's reason).
HOST_ONLY_OPS = {"pd_op.multiclass_nms3": "host stage: Paddle.js has no NMS kernel"}
#: The receipt's reason for the other ops of the host stage.
HOST_REASON = "host stage: reads a second input or an NMS output"


@dataclass
class HostStage:
    """What runs on the host after the page (see :mod:`hwdeploy_webgl.host`), built during lowering.

    A model gets one when it has an op in :data:`HOST_ONLY_OPS` or a second input. Its first input feeds the
    page; every op that reads another input, an NMS output or a value computed from those runs here, and so do
    the fetches. Device values such ops read are *exported*: the page returns them all, packed into its one
    output. References (``ref``) are the host program's own value numbers.
    """

    inputs: list[dict[str, Any]] = field(default_factory=list)
    exports: list[tuple[int, Value]] = field(default_factory=list)
    consts: dict[int, np.ndarray] = field(default_factory=dict)
    ops: list[dict[str, Any]] = field(default_factory=list)
    fetch: list[dict[str, Any]] = field(default_factory=list)
    _refs: int = 0
    _exported: dict[int, int] = field(default_factory=dict)  # id(Value) -> ref

    @staticmethod
    def needed(program) -> bool:
        types = [op.type for op in program.ops]
        return any(t in HOST_ONLY_OPS for t in types) or types.count("pd_op.data") > 1

    def new_ref(self) -> int:
        self._refs += 1
        return self._refs

    def ref(self, value: Value) -> int:
        """The host reference of ``value``: its own, a constant, a combined list, or a new export."""
        if value.host:
            return value.host_ref
        if value.poison:
            raise NotJudgeable()
        if value.const is not None:
            r = self.new_ref()
            self.consts[r] = np.asarray(value.const)
            return r
        if value.items is not None:
            r = self.new_ref()
            self.ops.append({"type": "builtin.combine", "inputs": [self.ref(v) for v in value.items],
                             "outputs": [r], "attrs": {}})
            return r
        if id(value) not in self._exported:
            if value.dtype not in FLOAT_DTYPES:
                raise Unsupported(f"the host stage would read a {value.dtype} value from the page (float32 only)")
            self._exported[id(value)] = self.new_ref()
            self.exports.append((self._exported[id(value)], value))
        return self._exported[id(value)]

    def record(self, op: PirOp, ins: list) -> list[Value]:
        refs = [self.ref(v) if v is not None else None for v in ins]
        outs = [self.new_ref() if vid is not None else None for vid in op.outputs]
        self.ops.append({"type": op.type, "inputs": refs, "outputs": outs, "attrs": _jsonable(op.attrs)})
        values = []
        for r, ttype in zip(outs, op.output_types):
            dtype, shape = ttype if ttype else ("float32", ())
            values.append(Value(tuple(shape), dtype, host_ref=r if r is not None else self.new_ref()))
        return values

    def program(self) -> dict[str, Any]:
        return {"inputs": self.inputs,
                "exports": [{"ref": r, "shape": list(v.shape), "size": v.size} for r, v in self.exports],
                "consts": {str(r): {"dtype": str(c.dtype), "shape": list(c.shape), "data": c.reshape(-1).tolist()}
                           for r, c in self.consts.items()},
                "ops": self.ops, "fetch": self.fetch,
                "op_counts": dict(sorted(Counter(op["type"] for op in self.ops
                                                 if op["type"] not in ("pd_op.fetch", "builtin.combine")).items()))}


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    def ok(v):
        return isinstance(v, (str, int, float, bool)) or (isinstance(v, list) and all(map(ok, v)))
    return {k: v for k, v in attrs.items() if ok(v)}


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _pad4(shape) -> tuple[int, ...]:
    return (1,) * (4 - len(shape)) + tuple(shape)


def _fmt_float(x: float) -> str:
    """A GLSL float literal (shaders interpolate some attributes raw: ``1`` would be an int)."""
    text = repr(float(x))
    return text if any(c in text for c in ".e") else text + ".0"


class Lowering:
    def __init__(self, program, params: dict[str, np.ndarray], *, batch: int = 1,
                 input_shape: list[int] | None = None):
        self.program = program
        self.params = params
        self.batch = batch
        self.input_shape = list(input_shape) if input_shape is not None else None
        self.values: dict[int, Value] = {}
        self.ops: list[dict[str, Any]] = []
        self.var_shapes: dict[str, tuple[int, ...]] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.view_cache: dict[tuple[str, tuple[int, ...]], str] = {}
        self.const_cache: dict[tuple[int, tuple[int, ...]], tuple[str, Value]] = {}
        self.unsupported: dict[str, list[str]] = defaultdict(list)
        self.passes: Counter = Counter()
        self.counter = 0
        self.input_info: dict[str, Any] | None = None
        self.fetch: list[tuple[str, Value]] = []
        self.host = HostStage() if program is not None and HostStage.needed(program) else None
        self.ids_input: dict[str, Any] | None = None  # an integer first input, fed to the page as its embedding
        self.embedding_table: np.ndarray | None = None

    # ------------------------------------------------------------ vars and ops
    def new_var(self, shape, prefix: str = "t") -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.var_shapes[name] = tuple(int(d) for d in shape)
        return name

    def emit(self, type_: str, inputs: dict[str, list[str]], out_shape, attrs: dict[str, Any] | None = None) -> str:
        if len(out_shape) > 4:
            raise Unsupported(f"needs a {len(out_shape)}-D tensor (Paddle.js tensors are at most 4-D)")
        names = [n for slot in inputs.values() for n in slot]
        if all(n in self.weights for n in names):
            # The runner's scheduler never reaches an op fed by weights only: such ops must be folded.
            raise ConversionError(f"internal: {type_} on constants only")
        out = self.new_var(out_shape)
        self.ops.append({"type": type_, "inputs": inputs, "outputs": {"Out": [out]}, "attrs": dict(attrs or {})})
        return out

    def weight(self, array: np.ndarray, prefix: str = "w") -> str:
        array = np.ascontiguousarray(array, dtype=np.float32)
        shape = array.shape or (1,)
        if len(shape) > 4:
            raise Unsupported(f"needs a {len(shape)}-D weight (Paddle.js tensors are at most 4-D)")
        name = self.new_var(shape, prefix)
        self.weights[name] = array.reshape(shape)
        return name

    def var_of(self, value: Value, shape=None) -> str:
        """The Paddle.js var holding ``value`` with registered shape ``shape`` (default: its own)."""
        shape = tuple(value.shape if shape is None else shape) or (1,)
        if value.poison:
            raise NotJudgeable()
        if value.ids:
            raise Unsupported(f"{value.dtype} ids read by an op other than an embedding (Paddle.js computes float32"
                              " only)")
        if value.items is not None:
            raise Unsupported("a list value used as a tensor")
        if value.var is None:
            if value.const is None:
                raise ConversionError("internal: value without data")
            key = (id(value), shape)  # the cache keeps ``value`` alive, so its id is never reused
            if key not in self.const_cache:
                self.const_cache[key] = (self.weight(np.asarray(value.const, np.float32).reshape(shape)), value)
            return self.const_cache[key][0]
        if value.dtype not in FLOAT_DTYPES:
            raise Unsupported(f"{value.dtype} tensors at run time (Paddle.js computes float32 only)")
        if self.var_shapes[value.var] == shape:
            return value.var
        key = (value.var, shape)
        if key not in self.view_cache:
            if _prod(shape) != _prod(self.var_shapes[value.var]):
                raise ConversionError(f"internal: cannot view {self.var_shapes[value.var]} as {shape}")
            self.view_cache[key] = self.emit("reshape2", {"X": [value.var]}, shape, {"shape": list(shape)})
            self.passes["reshape copies"] += 1
        return self.view_cache[key]

    def activation(self, value: Value, fuse: dict[str, Any], note: str = "") -> Value:
        """``value`` through an activation, as an identity ``scale`` op carrying ``fuse_opt`` (fused later)."""
        if value.const is not None:
            result = np.asarray(value.const, np.float32)
            for key, params in fuse.items():
                result = _NUMPY_ACTS[key](result, params)
            return Value(value.shape, const=result)
        if "tanh" in fuse:
            # As fuse_opt, tanh calls tanh_calc before the shader defines it (compile error): its own op.
            out = self.emit("tanh", {"X": [self.var_of(value)]}, value.shape, {})
            return Value(value.shape, var=out)
        out = self.emit("scale", {"X": [self.var_of(value)]}, value.shape,
                        {"scale": 1.0, "bias": 0.0, "bias_after_scale": True, "fuse_opt": fuse, "hwd_act": True})
        if note:
            self.passes[note] += 1
        return Value(value.shape, var=out)

    def scale(self, value: Value, scale: float, bias: float, bias_after_scale: bool = True) -> Value:
        if value.const is not None:
            c = np.asarray(value.const, np.float32)
            return Value(value.shape, const=(c * scale + bias) if bias_after_scale else (c + bias) * scale)
        out = self.emit("scale", {"X": [self.var_of(value)]}, value.shape,
                        {"scale": float(scale), "bias": float(bias), "bias_after_scale": bool(bias_after_scale)})
        return Value(value.shape, var=out)

    # ------------------------------------------------------------ driver
    def run(self) -> None:
        for index, op in enumerate(self.program.ops):
            unread = TRAINING_ONLY_INPUTS.get(op.type, ())
            ins = [self.values.get(i) if i is not None and slot not in unread else None
                   for slot, i in enumerate(op.inputs)]
            handler = _on_host if self._runs_on_host(op, ins) else HANDLERS.get(op.type)
            outs: list[Value] | None = None
            after_refusal = any(v is not None and v.poison for v in ins)
            shapes_guessed = any(v is not None and v.poison and not v.shape_known for v in ins)
            if after_refusal and not self.unsupported:
                raise ConversionError(f"internal: {op.type} reads an output the converter dropped")
            if handler is None:
                self.unsupported[op.type].append("no Paddle.js WebGL kernel")
            else:
                # After a refused op the handler still runs on the shapes alone, so that every refused op is
                # listed with its count (not only the first of a chain); its outputs stay unusable.
                try:
                    outs = handler(self, op, ins)
                except Unsupported as exc:
                    if not shapes_guessed:  # a refusal judged on made-up dims would be a false report
                        self.unsupported[op.type].append(str(exc))
                except NotJudgeable:
                    pass  # needs the data of an op already refused: listed through that op
                except Exception as exc:
                    if not after_refusal:  # (a handler fed shapes only may fail any way: not a verdict)
                        self._raise_naming(op, index, exc)
                if after_refusal:
                    outs = None
            if outs is None:
                outs = [self._placeholder(t) for t in op.output_types]
            for vid, value, ttype in zip(op.outputs, outs, op.output_types):
                if vid is None:
                    continue
                if not value.poison and ttype and value.items is None and not value.host:
                    self._check_shape(op, value, ttype[1])
                self.values[vid] = value
        if self.unsupported:
            listed = "; ".join(f"{name} x{len(why)} ({'; '.join(sorted(set(why)))})"
                               for name, why in sorted(self.unsupported.items()))
            raise UnsupportedOpsError(f"Paddle.js (WebGL) cannot run {len(self.unsupported)} op type(s) of this"
                                      f" model: {listed}", sorted(self.unsupported))
        if self.input_info is None:
            raise ConversionError("the program has no input (pd_op.data)")
        if not (self.host.fetch if self.host else self.fetch):
            raise ConversionError("the program has no output (pd_op.fetch)")

    def _runs_on_host(self, op: PirOp, ins: list) -> bool:
        if self.host is None:
            return False
        if op.type in HOST_ONLY_OPS or op.type == "pd_op.fetch":
            return True
        if op.type == "pd_op.data":  # the first input feeds the page, the others stay on the host
            return self.input_info is not None or self.ids_input is not None
        return any(v is not None and v.host for v in ins)

    def _placeholder(self, ttype) -> Value:
        """What a refused op's output looks like to the ops after it: its program type, the batch filled in."""
        if not ttype:
            return Value((), poison=True)
        dims = [self.batch if i == 0 and d < 0 else d for i, d in enumerate(ttype[1])]
        return Value(tuple(max(d, 1) for d in dims), poison=True, shape_known=all(d >= 0 for d in dims))

    def _raise_naming(self, op: PirOp, index: int, exc: Exception) -> NoReturn:
        """Re-raise a handler's failure naming the op, the original exception kept as the cause."""
        where = f"{op.type} (op {index + 1} of {len(self.program.ops)})"
        if isinstance(exc, (OptionError, UnsupportedOpsError)):
            raise exc
        if isinstance(exc, ConversionError):
            raise ConversionError(f"{where}: {exc}") from exc
        raise ConversionError(f"the webgl converter failed on {where}: {type(exc).__name__}: {exc} (converter"
                              " bug, please report)") from exc

    def _check_shape(self, op: PirOp, value: Value, pir_shape) -> None:
        # A static dim that disagrees with Paddle's own inference means a converter bug: stop, never guess.
        shape = tuple(value.shape)
        pir = tuple(pir_shape)
        if len(pir) == 0 and shape in ((), (1,)):
            return
        if len(pir) != len(shape) or any(p >= 0 and p != s for p, s in zip(pir, shape)):
            raise ConversionError(f"shape inference for {op.type} gave {list(shape)} but the program says"
                                  f" {list(pir)}: converter bug, please report")


# ---------------------------------------------------------------- helpers


def _const(value: Value | None, what: str) -> np.ndarray:
    if value is not None and value.poison:
        raise NotJudgeable()
    if value is None or value.const is None:
        raise Unsupported(f"{what} must be a compile-time constant")
    return np.asarray(value.const)


def _ints(value: Value | None, what: str) -> list[int]:
    return [int(v) for v in np.asarray(_const(value, what)).reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def _only_first_output_used(lw: Lowering, op: PirOp, also: tuple[int, ...] = ()) -> None:
    # Extra outputs (masks, indices, saved statistics) have no Paddle.js equivalent: refuse if anything reads them.
    # ``also``: further outputs the handler does compute (an RNN's final state).
    extra = {v for index, v in enumerate(op.outputs) if index and index not in also and v is not None}
    if not extra:
        return
    for other in lw.program.ops:
        if extra & set(other.inputs):
            raise Unsupported("a secondary output (mask/indices/statistics) is used by another op")


def _conv_pads(op: PirOp, in_hw, k_hw, strides, dilations) -> list[int]:
    """[top, bottom, left, right] from Paddle's paddings + padding_algorithm."""
    algo = op.attrs.get("padding_algorithm", "EXPLICIT")
    pads = [int(p) for p in op.attrs.get("paddings", [0, 0])]
    if algo == "VALID":
        return [0, 0, 0, 0]
    if algo == "SAME":
        out = []
        for size, k, s, d in zip(in_hw, k_hw, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            out += [total // 2, total - total // 2]
        return out
    if len(pads) == 2:
        return [pads[0], pads[0], pads[1], pads[1]]
    if len(pads) == 4:
        return pads
    raise Unsupported(f"paddings {pads}")


def _check_nchw(op: PirOp) -> None:
    fmt = op.attrs.get("data_format", "NCHW")
    if fmt not in ("NCHW", "AnyLayout", "NCDHW"):
        raise Unsupported(f"data_format {fmt} (Paddle.js layout is NCHW)")


# ---------------------------------------------------------------- handlers
Handler = Callable[[Lowering, PirOp, list], list]
HANDLERS: dict[str, Handler] = {}
#: Inputs an op reads only when training (an RNN's dropout state, which is not in the parameter file): their
#: handlers see None there.
TRAINING_ONLY_INPUTS: dict[str, frozenset[int]] = {"pd_op.rnn": frozenset({4})}


def handles(*names: str):
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn
    return register


@handles("builtin.parameter")
def _parameter(lw, op, ins):
    name = op.attrs["parameter_name"]
    if name not in lw.params:
        # Not persistable (e.g. an RNN's dropout state): not in the file; its readers get no data.
        return [Value(op.output_types[0][1] if op.output_types[0] else (), poison=True)]
    array = lw.params[name]
    return [Value(tuple(array.shape), str(array.dtype), const=array)]


def _on_host(lw, op, ins):
    """An op of the host stage: recorded for :mod:`hwdeploy_webgl.host`, never emitted for the page."""
    stage = lw.host
    dtype, shape = op.output_types[0] if op.output_types and op.output_types[0] else ("float32", ())
    if op.type == "pd_op.data":
        ref = stage.new_ref()
        stage.inputs.append({"name": op.attrs.get("name", f"input_{len(stage.inputs) + 1}"), "ref": ref,
                             "dtype": dtype, "shape": list(shape)})
        return [Value(tuple(shape), dtype, host_ref=ref)]
    if op.type not in host_stage.KERNELS:
        raise Unsupported("reads a second input or an NMS output, so it would run on the host, where hwdeploy"
                          " computes only NMS and the arithmetic around it")
    if op.type == "pd_op.multiclass_nms3":
        boxes, scores = ins[0], ins[1]
        if len(ins) > 2 and ins[2] is not None:
            raise Unsupported("multiclass_nms3 with rois_num (LoD-style scores)")
        if len(boxes.shape) != 3 or boxes.shape[-1] != 4 or len(scores.shape) != 3:
            raise Unsupported(f"multiclass_nms3 on boxes {list(boxes.shape)} and scores {list(scores.shape)}"
                              " (the host stage takes [N, M, 4] boxes and [N, C, M] scores)")
    outs = stage.record(op, ins)
    if op.type == "pd_op.fetch":
        stage.fetch.append({"name": op.attrs.get("name", f"fetch_{len(stage.fetch)}"),
                            "ref": stage.ops[-1]["outputs"][0], "dtype": dtype, "shape": list(shape)})
    return outs


INT_DTYPES = ("int64", "int32")


@handles("pd_op.data")
def _data(lw, op, ins):
    if lw.input_info is not None or lw.ids_input is not None:
        raise Unsupported("a second model input (Paddle.js feeds exactly one, named 'image')")
    dtype, shape = op.output_types[0] or (op.attrs.get("dtype"), tuple(op.attrs.get("shape", ())))
    if dtype != "float32" and dtype not in INT_DTYPES:
        raise Unsupported(f"{dtype} input {op.attrs.get('name')!r} (Paddle.js feeds float32 only)")
    shape = list(shape)
    if lw.input_shape is not None:
        if len(lw.input_shape) != len(shape) or any(s >= 0 and s != u for s, u in zip(shape, lw.input_shape)):
            raise OptionError(f"input_shape {lw.input_shape} does not fit the model's input {shape}")
        shape = list(lw.input_shape)
    if shape and shape[0] < 0:
        shape[0] = lw.batch
    if any(d < 0 for d in shape):
        raise ConversionError(f"input {op.attrs.get('name')!r} has dynamic dimensions {list(op.output_types[0][1])}:"
                              " Paddle.js needs static shapes; pass input_shape=[...]")
    if len(shape) > 4:
        raise Unsupported(f"{len(shape)}-D input (Paddle.js tensors are at most 4-D)")
    shape = tuple(shape) or (1,)
    pir_shape = op.output_types[0][1] if op.output_types[0] else ()
    info = {"name": op.attrs.get("name", "x"), "shape": list(shape), "dtype": dtype,
            "batch": shape[0] if pir_shape and pir_shape[0] < 0 else None}
    if dtype in INT_DTYPES:  # token ids: the page is fed their embedding instead (see _embedding)
        lw.ids_input = info
        return [Value(shape, dtype, ids=True)]
    _feed(lw, shape, info)
    return [Value(shape, var="image")]


def _feed(lw: Lowering, shape: tuple[int, ...], info: dict[str, Any]) -> None:
    lw.var_shapes["image"] = shape
    lw.ops.append({"type": "feed", "inputs": {"X": ["feed"]}, "outputs": {"Out": ["image"]}, "attrs": {}})
    lw.input_info = info


@handles("pd_op.embedding")
def _embedding(lw, op, ins):
    """A lookup of constant positions folds; one of the model's integer input becomes what the page is fed: the
    predictor looks the ids up in the table on the host (Paddle.js has no gather and computes float32 only)."""
    ids, table = ins[0], ins[1]
    weights = _const(table, "the embedding table")
    padding = int(op.attrs.get("padding_idx", -1))
    if weights.ndim != 2:
        raise Unsupported(f"an embedding table of shape {list(weights.shape)}")
    if ids.const is not None:
        index = np.asarray(ids.const).astype(np.int64)
        if index.size and not (0 <= index.min() and index.max() < len(weights)):
            raise ConversionError(f"constant ids out of the table's {len(weights)} rows")
        rows = host_stage.embedding_rows(weights, index, padding)
        return [Value(rows.shape, str(rows.dtype), const=rows)]
    if not ids.ids:
        raise Unsupported("an embedding of computed ids (Paddle.js has no gather)")
    if lw.input_info is not None:
        raise Unsupported("a second embedding of the ids (the page is fed one tensor)")
    shape = tuple(ids.shape) + (int(weights.shape[1]),)
    if len(shape) > 4:
        raise Unsupported(f"{len(shape)}-D embedding output (Paddle.js tensors are at most 4-D)")
    _feed(lw, shape, {**lw.ids_input, "embedding": {"rows": int(weights.shape[0]), "dim": int(weights.shape[1]),
                                                    "padding_idx": padding, "file": EMBEDDING_FILE}})
    lw.embedding_table = np.ascontiguousarray(weights, dtype=np.float32)
    lw.passes["ids looked up in their embedding on the host"] += 1
    return [Value(shape, var="image")]


@handles("pd_op.fetch")
def _fetch(lw, op, ins):
    if lw.fetch:
        raise Unsupported("a second model output (Paddle.js returns one)")
    pir_shape = list(op.output_types[0][1]) if op.output_types and op.output_types[0] else []
    lw.fetch.append((op.attrs.get("name", f"fetch_{len(lw.fetch)}"), ins[0], bool(pir_shape) and pir_shape[0] < 0))
    return [ins[0]]


@handles("pd_op.full")
def _full(lw, op, ins):
    return [_filled(tuple(int(s) for s in op.attrs.get("shape", [])), op.attrs["value"],
                    op.attrs.get("dtype", "float32"))]


def _filled(shape: tuple[int, ...], value, dtype: str) -> Value:
    if any(d < 0 for d in shape) or _prod(shape) > MAX_FILLED_ELEMENTS:
        raise ConversionError(f"a constant of shape {list(shape)} (at most {MAX_FILLED_ELEMENTS} elements, no"
                              " negative dims)")
    np_dtype = dtype if dtype in ("float32", "float64", "int32", "int64", "bool", "float16") else "float32"
    return Value(shape, dtype, const=np.full(shape, value, dtype=np_dtype))


@handles("pd_op.full_int_array")
def _full_int_array(lw, op, ins):
    values = np.asarray(op.attrs.get("value", []), dtype=np.int64)
    return [Value(values.shape, "int64", const=values)]


@handles("pd_op.shape64")
def _shape(lw, op, ins):
    return [Value((len(ins[0].shape),), "int64", const=np.asarray(ins[0].shape, dtype="int64"))]


@handles("builtin.combine")
def _combine(lw, op, ins):
    return [Value((len(ins),), items=list(ins))]


@handles("builtin.split")
def _split_list(lw, op, ins):
    items = ins[0].items
    if items is None or len(items) != len(op.outputs):
        raise ConversionError("internal: builtin.split of a non-list")
    return list(items)


@handles("pd_op.assign")
def _identity(lw, op, ins):
    return [ins[0]]


@handles("pd_op.cast")
def _cast(lw, op, ins):
    x, dtype = ins[0], op.attrs.get("dtype", "float32")
    if x.const is not None:
        return [Value(x.shape, dtype, const=x.const.astype(dtype if dtype != "bfloat16" else "float32"))]
    if dtype not in FLOAT_DTYPES or x.dtype not in FLOAT_DTYPES:
        raise Unsupported(f"cast {x.dtype} -> {dtype} at run time (Paddle.js computes float32 only)")
    return [x]


@handles("pd_op.dropout")
def _dropout(lw, op, ins):
    _only_first_output_used(lw, op)
    if not op.attrs.get("is_test", True):
        raise Unsupported("dropout in training mode")
    if op.attrs.get("mode", "upscale_in_train") == "upscale_in_train":
        return [ins[0], Value(ins[0].shape, poison=True)]
    # downgrade_in_infer (nn.Dropout mode="downscale_in_infer"): x * (1 - p), p a shape-[1] tensor in PIR.
    given = len(ins) > 2 and ins[2] is not None
    p = np.asarray(_const(ins[2], "dropout probability") if given else op.attrs.get("p", 0.5), np.float64).reshape(-1)
    if p.size != 1 or not 0.0 <= float(p[0]) <= 1.0:
        raise Unsupported(f"dropout probability {p.tolist()} (one value in [0, 1] expected)")
    return [lw.scale(ins[0], 1.0 - float(p[0]), 0.0), Value(ins[0].shape, poison=True)]


# ---- shape ops: views (no data movement until an op needs another shape)
def _view(value: Value, shape) -> Value:
    shape = tuple(int(s) for s in shape)
    if value.const is not None:
        return Value(shape, value.dtype, const=np.asarray(value.const).reshape(shape))
    return Value(shape, value.dtype, var=value.var)


@handles("pd_op.reshape")
def _reshape(lw, op, ins):
    x, target = ins[0], _ints(ins[1], "reshape shape")
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    if shape.count(-1) > 1:
        raise Unsupported(f"reshape to {target}")
    if -1 in shape:
        known = _prod([s for s in shape if s != -1])
        shape[shape.index(-1)] = x.size // max(known, 1)
    if _prod(shape) != x.size:
        raise ConversionError(f"reshape of {list(x.shape)} to {target}: sizes differ")
    return [_view(x, shape), Value(poison=True)][:len(op.outputs)]


@handles("pd_op.flatten")
def _flatten(lw, op, ins):
    x = ins[0]
    rank = len(x.shape)
    if rank == 0:
        return [_view(x, (1,))]
    start, stop = _axis(op.attrs.get("start_axis", 1), rank), _axis(op.attrs.get("stop_axis", -1), rank)
    shape = list(x.shape[:start]) + [_prod(x.shape[start:stop + 1])] + list(x.shape[stop + 1:])
    return [_view(x, shape)]


@handles("pd_op.squeeze")
def _squeeze(lw, op, ins):
    x = ins[0]
    axes = [_axis(a, len(x.shape)) for a in _ints(ins[1], "squeeze axes")] if len(ins) > 1 else []
    axes = axes or [i for i, s in enumerate(x.shape) if s == 1]
    shape = [s for i, s in enumerate(x.shape) if not (i in axes and s == 1)]
    return [_view(x, shape)]


@handles("pd_op.unsqueeze")
def _unsqueeze(lw, op, ins):
    x = ins[0]
    shape = list(x.shape)
    for a in _ints(ins[1], "unsqueeze axes"):
        a = a + len(shape) + 1 if a < 0 else a
        shape.insert(a, 1)
    return [_view(x, shape)]


@handles("pd_op.transpose")
def _transpose(lw, op, ins):
    x, perm = ins[0], [_axis(p, len(ins[0].shape)) for p in op.attrs["perm"]]
    shape = tuple(x.shape[p] for p in perm)
    if x.const is not None:
        return [Value(shape, x.dtype, const=np.transpose(x.const, perm))]
    moved = [p for p in perm if x.shape[p] != 1]
    if moved == sorted(moved):  # only size-1 axes move: same data order
        return [_view(x, shape)]
    if len(shape) > 4:
        # Paddle.js tensors are at most 4-D; a 5-D shuffle (ShuffleNet's [N, g, C/g, H, W] -> [N, C/g, g, H, W])
        # moves fewer blocks: drop size-1 axes, merge axes that stay neighbours, transpose that, view it back.
        compact_in, compact_perm = compact_permutation(x.shape, perm)
        if len(compact_in) > 4:
            raise Unsupported(f"{len(shape)}-D transpose that stays {len(compact_in)}-D after merging axes")
        compact_out = tuple(compact_in[p] for p in compact_perm)
        out = lw.emit("transpose2", {"X": [lw.var_of(x, compact_in)]}, compact_out, {"axis": compact_perm})
        lw.passes["5-D transpose -> merged axes"] += 1
        return [Value(shape, var=out)]
    out = lw.emit("transpose2", {"X": [lw.var_of(x)]}, shape, {"axis": perm})
    return [Value(shape, var=out)]


def compact_permutation(shape, perm) -> tuple[tuple[int, ...], list[int]]:
    """The same data movement on fewer axes: size-1 axes dropped, runs of axes that stay adjacent and in order
    merged. Returns (the merged input shape, the permutation of it); transposing the input viewed with that
    shape gives the output's data in order."""
    keep = [a for a in range(len(shape)) if shape[a] != 1]
    renumber = {a: i for i, a in enumerate(keep)}
    order = [renumber[p] for p in perm if shape[p] != 1]
    sizes = [shape[a] for a in keep]
    groups: list[list[int]] = []
    for axis in order:
        if groups and groups[-1][-1] + 1 == axis:
            groups[-1].append(axis)
        else:
            groups.append([axis])
    by_input = sorted(range(len(groups)), key=lambda g: groups[g][0])
    merged = tuple(_prod([sizes[a] for a in groups[g]]) for g in by_input) or (1,)
    return merged, [by_input.index(g) for g in range(len(groups))] or [0]


# ---- elementwise


def _broadcast(a, b) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
    except ValueError:
        raise ConversionError(f"shapes {list(a)} and {list(b)} do not broadcast") from None


_FOLD = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": None}


def _fold_binary(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if kind == "div":
        if np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer):
            return np.floor_divide(x, y)
        return np.divide(x, y)
    return _FOLD[kind](x, y)


def binary(lw: Lowering, kind: str, x: Value, y: Value) -> Value:
    """``x <kind> y`` with numpy broadcasting, legalised for Paddle.js' elementwise shaders."""
    out = _broadcast(x.shape, y.shape)
    if x.const is not None and y.const is not None:
        result = _fold_binary(kind, np.asarray(x.const), np.asarray(y.const))
        return Value(out, str(result.dtype), const=result)
    # A scalar constant operand becomes a scale op (x*s + b).
    if y.const is not None and y.size == 1:
        c = float(np.asarray(y.const).reshape(-1)[0])
        s, b = {"add": (1.0, c), "sub": (1.0, -c), "mul": (c, 0.0), "div": (1.0 / c if c else math.inf, 0.0)}[kind]
        if not math.isfinite(s):
            raise Unsupported("division by a constant zero")
        lw.passes["constant operand -> scale"] += 1
        return _view(lw.scale(x, s, b), out)
    if x.const is not None and x.size == 1 and kind != "div":
        c = float(np.asarray(x.const).reshape(-1)[0])
        s, b = {"add": (1.0, c), "sub": (-1.0, c), "mul": (c, 0.0)}[kind]
        lw.passes["constant operand -> scale"] += 1
        return _view(lw.scale(y, s, b), out)
    rank = len(out)
    xs, ys = _pad_to(x.shape, rank), _pad_to(y.shape, rank)
    if xs != out and ys != out:  # both operands broadcast: only constants can be expanded
        if x.const is not None:
            x, xs = Value(out, const=np.broadcast_to(x.const, out)), out
        elif y.const is not None:
            y, ys = Value(out, const=np.broadcast_to(y.const, out)), out
        else:
            raise Unsupported(f"{kind} of {list(x.shape)} and {list(y.shape)} (both operands broadcast)")
    negate = False
    if xs != out:  # x is the small one
        if kind in ("add", "mul"):
            x, y, xs, ys = y, x, ys, xs
        elif kind == "sub":
            x, y, xs, ys, negate = y, x, ys, xs, True
        elif x.const is not None:
            x, xs = Value(out, const=np.broadcast_to(x.const, out)), out
        else:
            raise Unsupported(f"divide where the dividend {list(xs)} is broadcast to {list(out)}")
    xv = lw.var_of(x, out)
    op_type = f"elementwise_{kind}"
    if ys == out:
        res = lw.emit(op_type, {"X": [xv], "Y": [lw.var_of(y, out)]}, out, {"axis": -1})
    elif kind in ("add", "sub"):
        res = _legacy_binary(lw, op_type, xv, y, ys, out)
    else:
        # The mul/div shaders clamp the Y position per dimension: same-rank broadcasting of 1-sized dims works,
        # except over the batch dim (clamped to N instead of N-1).
        if len(out) > 4:
            raise Unsupported(f"{len(out)}-D {kind}")
        if _pad4(ys)[0] != _pad4(out)[0]:
            if y.const is None:
                raise Unsupported(f"{kind} broadcasting over the batch dimension ({list(ys)} to {list(out)})")
            y, ys = Value(out, const=np.broadcast_to(y.const, out)), out
        res = lw.emit(op_type, {"X": [xv], "Y": [lw.var_of(y, ys)]}, out, {"axis": -1})
    value = Value(out, var=res)
    if negate:
        lw.passes["x - y as -(y - x)"] += 1
        value = lw.scale(value, -1.0, 0.0)
    return value


_NUMPY_ACTS: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "relu": lambda x, p: np.maximum(x, 0),
    "relu6": lambda x, p: np.clip(x, 0, p["threshold"]),
    "leakyRelu": lambda x, p: np.where(x > 0, x, x * p["alpha"]),
    "sigmoid": lambda x, p: 1 / (1 + np.exp(-x)),
    "tanh": lambda x, p: np.tanh(x),
    "exp": lambda x, p: np.exp(x),
    "pow": lambda x, p: np.power(x, p["factor"]),
    "hard_sigmoid": lambda x, p: np.clip(x * p["slope"] + p["offset"], 0, 1),
    "hard_swish": lambda x, p: x * np.clip(x + p["offset"], 0, p["threshold"]) / p["scale"],
}


def _pad_to(shape, rank) -> tuple[int, ...]:
    return (1,) * (rank - len(shape)) + tuple(shape)


def _legacy_binary(lw: Lowering, op_type: str, xv: str, y: Value, ys, out) -> str:
    # add/sub shaders index Y at dims [axis, axis+len(Y)) of X (Paddle 1.x broadcasting), no clamping.
    nz = [i for i, s in enumerate(ys) if s != 1]
    if nz:
        i0, i1 = nz[0], nz[-1]
    else:  # a single value: put it on any size-1 dim of the output
        ones = [i for i, s in enumerate(out) if s == 1]
        if not ones:
            if y.const is None:
                raise Unsupported(f"broadcasting a 1-element tensor over {list(out)}")
            return lw.emit(op_type, {"X": [xv], "Y": [lw.var_of(Value(out, const=np.broadcast_to(y.const, out)))]},
                           out, {"axis": -1})
        i0 = i1 = ones[-1]
    if any(ys[i] != out[i] for i in range(i0, i1 + 1)):
        if y.const is None:
            raise Unsupported(f"broadcasting {list(ys)} over {list(out)} (not a contiguous sub-shape)")
        yv = lw.var_of(Value(out, const=np.broadcast_to(y.const, out)))
        return lw.emit(op_type, {"X": [xv], "Y": [yv]}, out, {"axis": -1})
    sub = tuple(ys[i0:i1 + 1])
    lw.passes["numpy broadcasting -> legacy axis"] += 1
    return lw.emit(op_type, {"X": [xv], "Y": [lw.var_of(y, sub)]}, out, {"axis": i0})


for _pir, _kind in (("pd_op.add", "add"), ("pd_op.subtract", "sub"), ("pd_op.multiply", "mul"),
                    ("pd_op.divide", "div")):
    HANDLERS[_pir] = (lambda kind: lambda lw, op, ins: [binary(lw, kind, ins[0], ins[1])])(_kind)


@handles("pd_op.scale")
def _scale(lw, op, ins):
    x = ins[0]
    s = float(_const(ins[1], "scale factor").reshape(-1)[0]) if len(ins) > 1 and ins[1] is not None \
        else float(op.attrs.get("scale", 1.0))
    b, after = float(op.attrs.get("bias", 0.0)), bool(op.attrs.get("bias_after_scale", True))
    if x.const is not None:
        c = np.asarray(x.const)
        return [Value(x.shape, x.dtype, const=(c * s + b) if after else (c + b) * s)]
    return [lw.scale(x, s, b, after)]


# ---- activations (as fuse_opt: the only form every one of them compiles in)
def _act(fuse_key: str, params: Callable[[PirOp], dict] | None = None, check: Callable[[PirOp], None] | None = None,
         note: str = ""):
    def handler(lw, op, ins):
        if check:
            check(op)
        return [lw.activation(ins[0], {fuse_key: params(op) if params else {}}, note)]
    return handler


@handles("pd_op.clip")
def _clip(lw, op, ins):
    # clip(x, lo, hi) = lo + relu6_t(x - lo) with threshold t = hi - lo: relu6's fuse_opt takes any threshold.
    lo = float(_const(ins[1], "clip min").reshape(-1)[0]) if len(ins) > 1 and ins[1] is not None else -np.inf
    hi = float(_const(ins[2], "clip max").reshape(-1)[0]) if len(ins) > 2 and ins[2] is not None else np.inf
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise Unsupported(f"clip to [{lo}, {hi}] (both bounds finite expected)")
    x = ins[0]
    if x.const is not None:
        return [Value(x.shape, x.dtype, const=np.clip(x.const, lo, hi))]
    shifted = lw.scale(x, 1.0, -lo)
    lw.passes["clip -> shifted relu6"] += 1
    return [lw.scale(lw.activation(shifted, {"relu6": {"threshold": hi - lo}}, "clip -> shifted relu6"), 1.0, lo)]


@handles("pd_op.arange")
def _arange(lw, op, ins):
    start, end, step = (float(_const(v, f"arange {w}").reshape(-1)[0]) for v, w in zip(ins[:3], ("start", "end", "step")))
    if step == 0 or abs((end - start) / step) > 1 << 20:
        raise Unsupported(f"arange({start}, {end}, {step})")
    dtype = op.attrs.get("dtype", "int64")
    values = np.arange(start, end, step).astype(dtype if dtype in ("float32", "float64", "int32", "int64") else "float32")
    return [Value(values.shape, values.dtype.name, const=values)]


@handles("pd_op.meshgrid")
def _meshgrid(lw, op, ins):
    items = ins[0].items if ins and ins[0] is not None and ins[0].items is not None else None
    if items is None:
        raise Unsupported("meshgrid of a tensor array")
    grids = np.meshgrid(*[_const(v, "meshgrid input").reshape(-1) for v in items], indexing="ij")
    return [Value(grids[0].shape, grids[0].dtype.name, items=[Value(g.shape, g.dtype.name, const=g) for g in grids])]


def _check_leaky(op):
    alpha = float(op.attrs.get("negative_slope", op.attrs.get("alpha", 0.02)))
    if alpha > 1:  # the shader computes max(x, alpha*x)
        raise Unsupported(f"leaky_relu with negative_slope {alpha} > 1")


def _check_hardsigmoid(op):
    if not op.attrs.get("slope", 0.2) or not op.attrs.get("offset", 0.5):  # the shader replaces 0 by its defaults
        raise Unsupported("hardsigmoid with slope or offset 0")


HANDLERS.update({
    "pd_op.relu": _act("relu"),
    # Paddle 3's relu6 carries no threshold; without one the shader gives wrong numbers.
    "pd_op.relu6": _act("relu6", lambda op: {"threshold": float(op.attrs.get("threshold", 6.0))},
                        note="relu6: explicit threshold"),
    "pd_op.leaky_relu": _act("leakyRelu", lambda op: {"alpha": float(op.attrs.get("negative_slope", 0.02))},
                             _check_leaky, note="leaky_relu -> fuse_opt.leakyRelu"),
    "pd_op.sigmoid": _act("sigmoid"),
    "pd_op.tanh": _act("tanh"),
    "pd_op.exp": _act("exp", note="exp -> fuse_opt.exp"),
    "pd_op.hardsigmoid": _act("hard_sigmoid", lambda op: {"slope": float(op.attrs.get("slope", 0.2)),
                                                           "offset": float(op.attrs.get("offset", 0.5))},
                              _check_hardsigmoid),
    "pd_op.hardswish": _act("hard_swish", lambda op: {"offset": 3.0, "scale": 6.0, "threshold": 6.0}),
})


@handles("pd_op.sqrt")
def _sqrt(lw, op, ins):
    # The shader's sqrt helper redefines a GLSL built-in (compile error): use pow(x, 0.5), exact for x >= 0.
    return [lw.activation(ins[0], {"pow": {"factor": 0.5}}, "sqrt -> pow 0.5")]


@handles("pd_op.pow")
def _pow(lw, op, ins):
    factor = float(op.attrs.get("y", op.attrs.get("factor", 1.0)))
    x = ins[0]
    if factor == 1.0:
        return [x]
    if factor == 2.0:
        lw.passes["pow 2 -> x*x"] += 1
        return [binary(lw, "mul", x, x)]
    if factor == 3.0:
        lw.passes["pow 3 -> x*x*x"] += 1
        return [binary(lw, "mul", binary(lw, "mul", x, x), x)]
    if factor == 0.5:
        return [lw.activation(x, {"pow": {"factor": 0.5}})]
    raise Unsupported(f"pow with exponent {factor:g} (GLSL pow is undefined for negative bases)")


@handles("pd_op.square")
def _square(lw, op, ins):
    return [binary(lw, "mul", ins[0], ins[0])]


@handles("pd_op.silu", "pd_op.swish")
def _silu(lw, op, ins):
    lw.passes["silu -> x * sigmoid(x)"] += 1
    return [binary(lw, "mul", ins[0], lw.activation(ins[0], {"sigmoid": {}}))]


@handles("pd_op.gelu")
def _gelu(lw, op, ins):
    if not op.attrs.get("approximate", False):
        raise Unsupported("exact gelu needs erf, which Paddle.js lacks (gelu(approximate=True) converts)")
    x = ins[0]
    lw.passes["gelu(tanh) decomposed"] += 1
    cube = binary(lw, "mul", binary(lw, "mul", x, x), x)
    inner = binary(lw, "add", lw.scale(cube, 0.044715, 0.0), x)
    t = lw.activation(lw.scale(inner, math.sqrt(2.0 / math.pi), 0.0), {"tanh": {}})
    return [binary(lw, "mul", lw.scale(t, 0.5, 0.5), x)]


# ---- conv / pool / norm


def _conv_operands(op, ins, name):
    """The input, constant weights, groups, strides and dilations every conv-like op starts from."""
    _check_nchw(op)
    x, w = ins[0], ins[1]
    if len(x.shape) != 4 or w.const is None or len(w.shape) != 4:
        raise Unsupported(f"{name} needs a 4-D input and constant 4-D weights")
    groups = int(op.attrs.get("groups", 1))
    strides = [int(s) for s in op.attrs.get("strides", [1, 1])]
    dil = [int(d) for d in op.attrs.get("dilations", [1, 1])]
    return x, w, groups, strides, dil


@handles("pd_op.conv2d", "pd_op.depthwise_conv2d")
def _conv2d(lw, op, ins):
    x, w, groups, strides, dil = _conv_operands(op, ins, "conv2d")
    n, c, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    if cin_g * groups != c:
        raise ConversionError(f"conv2d: input has {c} channels, weights expect {cin_g}x{groups}")
    pt, pb, pl, pr = _conv_pads(op, (h, wd), (kh, kw), strides, dil)
    oh = (h + pt + pb - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pl + pr - dil[1] * (kw - 1) - 1) // strides[1] + 1
    xv = lw.var_of(x)
    if min(pt, pb, pl, pr) < 0:
        raise Unsupported("negative conv paddings")
    if (pt, pl) == (0, 1):
        # The shader's adaptPaddings turns paddings [0, 1] into [0, 0]: pad explicitly instead.
        xv = lw.emit("pad3d", {"X": [xv]}, (n, c, h + pt + pb, wd + pl + pr),
                     {"paddings": [pl, pr, pt, pb, 0, 0], "mode": "constant", "value": "0.0"})
        pt = pb = pl = pr = 0
        lw.passes["conv paddings [0,1] -> pad3d"] += 1
    # Only the top/left padding enters the shader; bottom/right follow from the output size.
    out = lw.emit("conv2d", {"Input": [xv], "Filter": [lw.var_of(w)]}, (n, cout, oh, ow),
                  {"strides": strides, "paddings": [pt, pl], "dilations": dil, "groups": groups,
                   "padding_algorithm": "EXPLICIT", "fuse_relu": False, "act_type": ""})
    lw.passes["conv2d: explicit fuse_relu/paddings"] += 1
    return [Value((n, cout, oh, ow), var=out)]


@handles("pd_op.conv2d_transpose")
def _conv2d_transpose(lw, op, ins):
    x, w, groups, strides, dil = _conv_operands(op, ins, "conv2d_transpose")
    n, c, h, wd = x.shape
    cin, cout_g, kh, kw = w.shape
    if groups != 1 or dil != [1, 1]:
        raise Unsupported(f"conv2d_transpose with groups={groups}, dilations={dil} (shader handles 1/1 only)")
    if n != 1:
        raise Unsupported("conv2d_transpose with batch > 1 (the shader mixes batch and channel indices)")
    if cin == 1 and cout_g == 1:
        raise Unsupported("conv2d_transpose with 1 input and 1 output channel (renamed to an unregistered op)")
    if op.attrs.get("padding_algorithm", "EXPLICIT") == "SAME":
        raise Unsupported("conv2d_transpose with padding_algorithm SAME")
    pt, pb, pl, pr = _conv_pads(op, (h, wd), (kh, kw), strides, dil)
    out_pad = [int(p) for p in op.attrs.get("output_padding", []) or [0, 0]]
    sizes = _ints(ins[2], "output_size") if len(ins) > 2 and ins[2] is not None else []
    oh = (h - 1) * strides[0] - pt - pb + kh + out_pad[0]
    ow = (wd - 1) * strides[1] - pl - pr + kw + out_pad[1]
    if sizes:
        oh, ow = sizes[-2], sizes[-1]
    attrs = {"strides": strides, "dilations": dil, "groups": 1, "padding_algorithm": "EXPLICIT", "fuse_relu": False,
             "act_type": ""}
    if pt == pb and pl == pr and (pl, pt) != (0, 1):
        # The shader reads paddings as [left, top]: pass them swapped.
        res = lw.emit("conv2d_transpose", {"Input": [lw.var_of(x)], "Filter": [lw.var_of(w)]}, (n, cout_g, oh, ow),
                      dict(attrs, paddings=[pl, pt]))
        return [Value((n, cout_g, oh, ow), var=res)]
    # Asymmetric paddings, or [1, 0] (which the shader's adaptPaddings turns into [0, 0]): compute the
    # unpadded output, then crop it.
    full_h, full_w = max((h - 1) * strides[0] + kh, pt + oh), max((wd - 1) * strides[1] + kw, pl + ow)
    res = lw.emit("conv2d_transpose", {"Input": [lw.var_of(x)], "Filter": [lw.var_of(w)]},
                  (n, cout_g, full_h, full_w), dict(attrs, paddings=[0, 0]))
    lw.passes["conv2d_transpose paddings -> crop"] += 1
    out = lw.emit("pad3d", {"X": [res]}, (n, cout_g, oh, ow),
                  {"paddings": [-pl, -(full_w - pl - ow), -pt, -(full_h - pt - oh), 0, 0], "mode": "constant",
                   "value": "0.0"})
    return [Value((n, cout_g, oh, ow), var=out)]


def _pool(lw: Lowering, op: PirOp, x: Value, ksize, pooling_type: str) -> Value:
    _check_nchw(op)
    if len(x.shape) != 4:
        raise Unsupported("pooling needs a 4-D input")
    n, c, h, w = x.shape
    strides = [int(s) for s in op.attrs.get("strides", [1, 1])]
    adaptive, global_ = bool(op.attrs.get("adaptive", False)), bool(op.attrs.get("global_pooling", False))
    ceil_mode = bool(op.attrs.get("ceil_mode", False))
    exclusive = bool(op.attrs.get("exclusive", True))
    attrs = {"pooling_type": pooling_type, "global_pooling": False, "adaptive": False, "ceil_mode": False,
             "exclusive": True, "padding_algorithm": "EXPLICIT"}
    if global_ or (adaptive and list(ksize) == [1, 1]):
        # Global max pooling in the shader outputs argmax indices: always pass an explicit window.
        lw.passes["global pooling -> explicit window"] += 1
        out = lw.emit("pool2d", {"X": [lw.var_of(x)]}, (n, c, 1, 1),
                      dict(attrs, ksize=[h, w], strides=[1, 1], paddings=[0, 0]))
        return Value((n, c, 1, 1), var=out)
    if adaptive:
        oh, ow = ksize
        if h % oh == 0 and w % ow == 0:
            kh, kw = h // oh, w // ow
            lw.passes["adaptive pooling -> fixed window"] += 1
            out = lw.emit("pool2d", {"X": [lw.var_of(x)]}, (n, c, oh, ow),
                          dict(attrs, ksize=[kh, kw], strides=[kh, kw], paddings=[0, 0]))
            return Value((n, c, oh, ow), var=out)
        if pooling_type != "avg":
            raise Unsupported(f"adaptive max pooling {h}x{w} -> {oh}x{ow} (not an integer ratio)")
        # The shipped bundle has no adaptive-average shader: it is linear, so a matmul with a pooling matrix.
        if h * w * oh * ow > 4_000_000:
            raise Unsupported(f"adaptive average pooling {h}x{w} -> {oh}x{ow} (pooling matrix too large)")
        pool = np.zeros((h * w, oh * ow), np.float32)
        for a in range(oh):
            h0, h1 = (a * h) // oh, -((-(a + 1) * h) // oh)
            for b in range(ow):
                w0, w1 = (b * w) // ow, -((-(b + 1) * w) // ow)
                cell = np.zeros((h, w), np.float32)
                cell[h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
                pool[:, a * ow + b] = cell.reshape(-1)
        lw.passes["adaptive avg pooling -> matmul"] += 1
        out = lw.emit("matmul_v2", {"X": [lw.var_of(x, (n * c, h * w))], "Y": [lw.weight(pool)]},
                      (n * c, oh * ow), {"trans_x": False, "trans_y": False})
        return Value((n, c, oh, ow), var=out)
    kh, kw = ksize
    pt, pb, pl, pr = _conv_pads(op, (h, w), (kh, kw), strides, (1, 1))
    rnd = math.ceil if ceil_mode else math.floor
    oh = int(rnd((h + pt + pb - kh) / strides[0])) + 1
    ow = int(rnd((w + pl + pr - kw) / strides[1])) + 1
    type_ = "pool2d"
    if pooling_type == "avg" and not exclusive and (pt or pb or pl or pr):
        if ceil_mode:
            raise Unsupported("average pooling with exclusive=False, padding and ceil_mode")
        type_ = "pool2d_avg"  # divides by the full window, as Paddle does with exclusive=False
    out = lw.emit(type_, {"X": [lw.var_of(x)]}, (n, c, oh, ow),
                  dict(attrs, ksize=[kh, kw], strides=strides, paddings=[pt, pl]))
    return Value((n, c, oh, ow), var=out)


@handles("pd_op.pool2d")
def _pool2d(lw, op, ins):
    return [_pool(lw, op, ins[0], _ints(ins[1], "pool2d kernel size"), op.attrs.get("pooling_type", "max"))]


@handles("pd_op.max_pool2d_with_index")
def _max_pool_with_index(lw, op, ins):
    _only_first_output_used(lw, op)
    ksize = [int(k) for k in op.attrs.get("kernel_size", [1, 1])]
    return [_pool(lw, op, ins[0], ksize, "max"), Value(poison=True)]


@handles("pd_op.batch_norm_")
def _batch_norm(lw, op, ins):
    _check_nchw(op)
    _only_first_output_used(lw, op)
    x, mean, var, scale, bias = ins[:5]
    for v, what in ((mean, "mean"), (var, "variance"), (scale, "scale"), (bias, "bias")):
        if v is None or v.const is None:
            raise Unsupported(f"batch_norm with a non-constant {what}")
    if len(x.shape) < 2:
        raise Unsupported("batch_norm of a 1-D tensor")
    eps = float(op.attrs.get("epsilon", 1e-5))
    a = np.asarray(scale.const, np.float64) / np.sqrt(np.asarray(var.const, np.float64) + eps)
    b = np.asarray(bias.const, np.float64) - np.asarray(mean.const, np.float64) * a
    rest = [Value(poison=True)] * (len(op.outputs) - 1)
    if len(x.shape) == 4 and eps > 0:
        out = lw.emit("batchnorm", {"X": [lw.var_of(x)], "Scale": [lw.weight(scale.const)],
                                    "Bias": [lw.weight(bias.const)], "Mean": [lw.weight(mean.const)],
                                    "Variance": [lw.weight(var.const)]}, x.shape, {"epsilon": eps})
        return [Value(x.shape, var=out)] + rest
    # Other ranks: x * a + b over axis 1 (the shader assumes NCHW).
    c = x.shape[1]
    shape = (1, c) + (1,) * (len(x.shape) - 2)
    y = binary(lw, "mul", x, Value(shape, const=a.astype(np.float32).reshape(shape)))
    return [binary(lw, "add", y, Value(shape, const=b.astype(np.float32).reshape(shape)))] + rest


@handles("pd_op.layer_norm")
def _layer_norm(lw, op, ins):
    _only_first_output_used(lw, op)
    x, scale, bias = ins[0], ins[1], ins[2]
    begin = _axis(int(op.attrs.get("begin_norm_axis", 1)), len(x.shape))
    eps = float(op.attrs.get("epsilon", 1e-5))
    axes = list(range(begin, len(x.shape)))
    lw.passes["layer_norm decomposed"] += 1
    mean = reduce(lw, "mean", x, axes, keepdim=True)
    centred = binary(lw, "sub", x, mean)
    var = reduce(lw, "mean", binary(lw, "mul", centred, centred), axes, keepdim=True)
    std = lw.activation(lw.scale(var, 1.0, eps), {"pow": {"factor": 0.5}})
    y = binary(lw, "div", centred, std)
    norm_shape = x.shape[begin:]
    if scale is not None:
        y = binary(lw, "mul", y, _view(scale, norm_shape))
    if bias is not None:
        y = binary(lw, "add", y, _view(bias, norm_shape))
    return [y] + [Value(poison=True)] * (len(op.outputs) - 1)


# ---- reductions, softmax, matmul


def reduce(lw: Lowering, kind: str, x: Value, axes: list[int], keepdim: bool) -> Value:
    rank = len(x.shape)
    axes = sorted({_axis(a, rank) for a in axes}) if axes else list(range(rank))
    if x.const is not None:
        fn = np.mean if kind == "mean" else np.sum
        return Value(tuple(np.asarray(fn(x.const, axis=tuple(axes), keepdims=keepdim)).shape), x.dtype,
                     const=np.asarray(fn(x.const, axis=tuple(axes), keepdims=keepdim)))
    if rank > 4:
        raise Unsupported(f"{rank}-D reduction")
    cur = x
    for a in axes:
        if cur.shape[a] == 1:
            continue
        shape = tuple(1 if i == a else s for i, s in enumerate(cur.shape))
        out = lw.emit(f"reduce_{kind}", {"X": [lw.var_of(cur)]}, shape, {"dim": [a], "axis": a, "keep_dim": True})
        cur = Value(shape, var=out)
    final = tuple(1 if i in axes else s for i, s in enumerate(x.shape) if keepdim or i not in axes)
    return _view(cur, final or (1,))


def reduce_extreme(lw: Lowering, kind: str, x: Value, axes: list[int], keepdim: bool) -> Value:
    """max/min over ``axes``: Paddle.js has no reduce_max, so each axis is moved last (a 4-D transpose) and
    max-pooled with a 1 x L window, then moved back; min is -max(-x). Exact: no arithmetic but negation."""
    rank = len(x.shape)
    axes = sorted({_axis(a, rank) for a in axes}) if axes else list(range(rank))
    if x.const is not None:
        fn = np.max if kind == "max" else np.min
        return Value(tuple(np.asarray(fn(x.const, axis=tuple(axes), keepdims=keepdim)).shape), x.dtype,
                     const=np.asarray(fn(x.const, axis=tuple(axes), keepdims=keepdim)))
    if rank > 4:
        raise Unsupported(f"{rank}-D {kind} reduction")
    lead = 4 - rank
    cur = _view(x, _pad4(x.shape))
    if kind == "min":
        cur = lw.scale(cur, -1.0, 0.0)
    for a in axes:
        a4 = a + lead
        if cur.shape[a4] == 1:
            continue
        perm = list(range(4))
        perm[a4], perm[3] = perm[3], perm[a4]
        moved = _transpose_value(lw, cur, perm) if a4 != 3 else cur
        pooled_shape = tuple(moved.shape[:3]) + (1,)
        out = lw.emit("pool2d", {"X": [lw.var_of(moved)]}, pooled_shape,
                      {"pooling_type": "max", "ksize": [1, moved.shape[3]], "strides": [1, 1], "paddings": [0, 0],
                       "global_pooling": False, "adaptive": False, "ceil_mode": False, "exclusive": True,
                       "padding_algorithm": "EXPLICIT"})
        pooled = Value(pooled_shape, var=out)
        cur = _transpose_value(lw, pooled, perm) if a4 != 3 else pooled
        lw.passes[f"{kind} over an axis -> max pool"] += 1
    if kind == "min":
        cur = lw.scale(cur, -1.0, 0.0)
    final = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keepdim or i not in axes)
    return _view(cur, final or (1,))


def _reduction(kind: str, lower: Callable[..., Value]):
    def handler(lw, op, ins):
        axes = _ints(ins[1], f"{kind} axes") if len(ins) > 1 else []
        return [lower(lw, kind, ins[0], axes, bool(op.attrs.get("keepdim", False)))]
    return handler


HANDLERS.update({f"pd_op.{kind}": _reduction(kind, lower) for kind, lower in (
    ("mean", reduce), ("sum", reduce), ("max", reduce_extreme), ("min", reduce_extreme))})


@handles("pd_op.softmax")
def _softmax(lw, op, ins):
    x = ins[0]
    rank = len(x.shape)
    if rank > 4 or rank == 0:
        raise Unsupported(f"softmax of a {rank}-D tensor")
    axis = _axis(int(op.attrs.get("axis", -1)), rank)
    if x.shape[axis] == 1:
        return [Value(x.shape, const=np.ones(x.shape, np.float32))]
    if axis != rank - 1:
        # The shader only handles the last and the channel axis reliably: move the axis last and back.
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        moved = _transpose_value(lw, x, perm)
        lw.passes["softmax axis moved last"] += 1
        return [_transpose_value(lw, _stable_softmax(lw, moved), perm)]
    return [_stable_softmax(lw, x)]


def _transpose_value(lw: Lowering, x: Value, perm: list[int]) -> Value:
    shape = tuple(x.shape[p] for p in perm)
    out = lw.emit("transpose2", {"X": [lw.var_of(x)]}, shape, {"axis": perm})
    return Value(shape, var=out)


def _stable_softmax(lw: Lowering, x: Value) -> Value:
    # The shader computes exp(x)/sum(exp(x)) without subtracting the max (inf/NaN above ~88): shift first.
    shape4 = _pad4(x.shape)
    mshape = tuple(x.shape[:-1]) + (1,)
    mx = lw.emit("pool2d", {"X": [lw.var_of(x)]}, mshape,
                 {"pooling_type": "max", "ksize": [1, shape4[3]], "strides": [1, 1], "paddings": [0, 0],
                  "global_pooling": False, "adaptive": False, "ceil_mode": False, "exclusive": True,
                  "padding_algorithm": "EXPLICIT"})
    shifted = binary(lw, "sub", x, Value(mshape, var=mx))
    lw.passes["softmax shifted by its max"] += 1
    out = lw.emit("softmax", {"X": [lw.var_of(shifted)]}, x.shape, {"axis": -1})
    return Value(x.shape, var=out)


def _reshaped(value: Value, shape: tuple[int, ...]) -> Value:
    """``value`` seen with another shape of the same size (a view of its var, or its constant reshaped)."""
    const = None if value.const is None else np.asarray(value.const).reshape(shape)
    return replace(value, shape=tuple(shape), const=const)


@handles("pd_op.matmul")
def _matmul(lw, op, ins):
    x, y = ins[0], ins[1]
    tx, ty = bool(op.attrs.get("transpose_x", False)), bool(op.attrs.get("transpose_y", False))
    if len(x.shape) == 1 or len(y.shape) == 1:
        # numpy's (and Paddle's) rule: a 1-D x is a row, a 1-D y a column, that dim is dropped from the result,
        # and a transpose flag on a 1-D operand means nothing. PicoDet's distribution-focal decoding is
        # ``softmax(bins) @ arange(bins)``.
        x2 = _reshaped(x, (1,) + tuple(x.shape)) if len(x.shape) == 1 else x
        y2 = _reshaped(y, tuple(y.shape) + (1,)) if len(y.shape) == 1 else y
        out = _matmul_values(lw, x2, y2, tx and len(x.shape) > 1, ty and len(y.shape) > 1)
        keep = out.shape[:-2] + out.shape[-2:-1] * (len(x.shape) > 1) + out.shape[-1:] * (len(y.shape) > 1)
        lw.passes["matmul with a 1-D operand as 2-D"] += 1
        return [_reshaped(out, keep)]
    return [_matmul_values(lw, x, y, tx, ty)]


def _matmul_values(lw: Lowering, x: Value, y: Value, tx: bool, ty: bool) -> Value:
    if x.const is not None and y.const is not None:
        a = np.swapaxes(x.const, -1, -2) if tx else x.const
        b = np.swapaxes(y.const, -1, -2) if ty else y.const
        r = np.matmul(a, b)
        return Value(r.shape, str(r.dtype), const=r)
    if y.const is not None and ty:  # transpose constant weights once, here
        y, ty = Value(tuple(y.shape[:-2]) + (y.shape[-1], y.shape[-2]), const=np.swapaxes(y.const, -1, -2)), False
    m, k = (x.shape[-1], x.shape[-2]) if tx else (x.shape[-2], x.shape[-1])
    k2, n = (y.shape[-1], y.shape[-2]) if ty else (y.shape[-2], y.shape[-1])
    if k != k2:
        raise ConversionError(f"matmul of {list(x.shape)} and {list(y.shape)}: inner sizes differ")
    attrs = {"trans_x": tx, "trans_y": ty}
    if len(y.shape) == 2 and len(x.shape) > 2:
        if tx:
            raise Unsupported("batched matmul with transpose_x against a 2-D operand")
        rows = _prod(x.shape[:-1])
        out = lw.emit("matmul_v2", {"X": [lw.var_of(x, (rows, k))], "Y": [lw.var_of(y)]}, (rows, n), attrs)
        return Value(tuple(x.shape[:-1]) + (n,), var=out)
    batch = _broadcast(x.shape[:-2], y.shape[:-2])
    if tuple(x.shape[:-2]) != batch or tuple(y.shape[:-2]) != batch:
        if y.const is not None and tuple(x.shape[:-2]) == batch:
            y = Value(batch + tuple(y.shape[-2:]), const=np.broadcast_to(y.const, batch + tuple(y.shape[-2:])))
        else:
            raise Unsupported(f"matmul broadcasting batch dims {list(x.shape)} x {list(y.shape)}")
    shape = batch + (m, n)
    if len(shape) > 4:
        raise Unsupported(f"{len(shape)}-D matmul")
    out = lw.emit("matmul_v2", {"X": [lw.var_of(x)], "Y": [lw.var_of(y)]}, shape, attrs)
    return Value(shape, var=out)


# ---- concat, slice, split, stack, pad, resize


@handles("pd_op.concat")
def _concat(lw, op, ins):
    items = ins[0].items or []
    axis = _axis(int(_const(ins[1], "concat axis").reshape(-1)[0]), len(items[0].shape))
    if all(v.const is not None for v in items):
        r = np.concatenate([np.asarray(v.const) for v in items], axis=axis)
        return [Value(r.shape, str(r.dtype), const=r)]
    if len(items[0].shape) > 4:
        raise Unsupported(f"{len(items[0].shape)}-D concat")
    return [concat(lw, items, axis)]


def concat(lw: Lowering, items: list[Value], axis: int) -> Value:
    """``items`` side by side along ``axis``, in concat ops of at most 4 inputs (what the shader takes)."""
    cur, rest = items[0], items[1:]
    while rest:
        group, rest = rest[:3], rest[3:]
        parts = [cur] + group
        shape = list(parts[0].shape)
        shape[axis] = sum(v.shape[axis] for v in parts)
        out = lw.emit("concat", {"X": [lw.var_of(v) for v in parts]}, shape, {"axis": axis})
        cur = Value(tuple(shape), var=out)
    return cur


def crop(lw: Lowering, x: Value, axis: int, start: int, length: int) -> Value:
    """``x`` sliced along ``axis`` (step 1), as a pad3d with negative paddings on a 4-D view."""
    shape = list(x.shape)
    if start == 0 and length == shape[axis]:
        return x
    new_shape = shape[:axis] + [length] + shape[axis + 1:]
    if x.const is not None:
        index = [slice(None)] * len(shape)
        index[axis] = slice(start, start + length)
        return Value(tuple(new_shape), x.dtype, const=np.asarray(x.const)[tuple(index)])
    p, d, q = _prod(shape[:axis]), shape[axis], _prod(shape[axis + 1:])
    if q == 1:  # crop the width of (1, 1, P, D)
        view, paddings, out_shape = (1, 1, p, d), [-start, -(d - start - length), 0, 0, 0, 0], (1, 1, p, length)
    else:  # crop the height of (1, P, D, Q)
        view, paddings, out_shape = (1, p, d, q), [0, 0, -start, -(d - start - length), 0, 0], (1, p, length, q)
    out = lw.emit("pad3d", {"X": [lw.var_of(x, view)]}, out_shape,
                  {"paddings": paddings, "mode": "constant", "value": "0.0"})
    lw.passes["slice -> crop"] += 1
    return Value(tuple(new_shape), var=out)


@handles("pd_op.slice")
def _slice(lw, op, ins):
    x = ins[0]
    starts, ends = _ints(ins[1], "slice starts"), _ints(ins[2], "slice ends")
    cur = x
    for a, s, e in zip(op.attrs["axes"], starts, ends):
        a = _axis(a, len(x.shape))
        d = x.shape[a]
        s = max(0, min(d, s + d if s < 0 else s))
        e = max(0, min(d, e + d if e < 0 else e))
        if e <= s:
            raise Unsupported("an empty slice")
        cur = crop(lw, cur, a, s, e - s)
    decrease = [_axis(a, len(x.shape)) for a in op.attrs.get("decrease_axis", [])]
    if decrease:
        cur = _view(cur, [d for i, d in enumerate(cur.shape) if i not in decrease])
    return [cur]


def _split_parts(lw: Lowering, x: Value, axis: int, sizes: list[int]) -> Value:
    parts, start = [], 0
    for size in sizes:
        parts.append(crop(lw, x, axis, start, size))
        start += size
    return Value((len(parts),), items=parts)


@handles("pd_op.split_with_num")
def _split_with_num(lw, op, ins):
    x, num = ins[0], int(op.attrs["num"])
    axis = _axis(int(_const(ins[1], "split axis").reshape(-1)[0]), len(x.shape))
    return [_split_parts(lw, x, axis, [x.shape[axis] // num] * num)]


@handles("pd_op.split")
def _split(lw, op, ins):
    x = ins[0]
    axis = _axis(int(_const(ins[2], "split axis").reshape(-1)[0]), len(x.shape))
    sizes = _ints(ins[1], "split sections")
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - sum(s for s in sizes if s != -1)
    return [_split_parts(lw, x, axis, sizes)]


@handles("pd_op.stack")
def _stack(lw, op, ins):
    items = ins[0].items or []
    axis = int(op.attrs.get("axis", 0))
    rank = len(items[0].shape) + 1
    axis = axis + rank if axis < 0 else axis
    if all(v.const is not None for v in items):
        r = np.stack([np.asarray(v.const) for v in items], axis=axis)
        return [Value(r.shape, str(r.dtype), const=r)]
    parts = [_view(v, list(v.shape[:axis]) + [1] + list(v.shape[axis:])) for v in items]
    fake = PirOp("pd_op.concat", {}, [], [], [])
    return _concat(lw, fake, [Value(items=parts), Value(const=np.asarray([axis]))])


@handles("pd_op.full_with_tensor")
def _full_with_tensor(lw, op, ins):
    # A tensor of a shape computed at run time (an RNN's initial state: [layers, batch, hidden]), static here.
    value, shape = _const(ins[0], "full_with_tensor value"), _ints(ins[1], "full_with_tensor shape")
    return [_filled(tuple(shape), np.asarray(value).reshape(-1)[0], op.attrs.get("dtype", "float32"))]


# ---- recurrent


@handles("pd_op.rnn")
def _rnn(lw, op, ins):
    """A one-layer, one-way GRU unrolled over its (static) sequence: Paddle's cell, step by step, as matmuls,
    sigmoid/tanh and elementwise ops (gates r, z, c in the weights' row order; h' = (h - c) * z + c)."""
    mode = op.attrs.get("mode")
    if mode != "GRU":
        raise Unsupported(f"rnn mode {mode} (only GRU is lowered)")
    if op.attrs.get("is_bidirec") or int(op.attrs.get("num_layers", 1)) != 1:
        raise Unsupported("a bidirectional or multi-layer GRU (only one layer, one direction is lowered)")
    if len(ins) > 3 and ins[3] is not None:
        raise Unsupported("a GRU with per-sequence lengths")
    _only_first_output_used(lw, op, also=(2,))  # the final state; the dropout state and reserve mean nothing here
    x, (state,), weights = ins[0], ins[1].items or [None], ins[2].items or []
    if len(weights) != 4 or state is None:
        raise Unsupported(f"a GRU with {len(weights)} weight tensors (one layer, one direction has 4)")
    w_ih, w_hh, b_ih, b_hh = (np.asarray(_const(w, "GRU weights"), np.float32) for w in weights)
    steps, batch, features = x.shape
    if steps > MAX_UNROLLED_STEPS:
        raise Unsupported(f"a GRU over {steps} steps (unrolled: at most {MAX_UNROLLED_STEPS})")
    hidden = int(op.attrs["hidden_size"])
    if w_ih.shape != (3 * hidden, features) or w_hh.shape != (3 * hidden, hidden):
        raise ConversionError(f"GRU weights {list(w_ih.shape)}, {list(w_hh.shape)} do not match hidden size"
                              f" {hidden} and input size {features}")

    # Every value in the shape (1, 1, rows, columns) that Paddle.js registers for 2-D data: crops, matmuls and
    # elementwise ops then read each other's vars as they are, with no reshape copies between them.
    def const4(array, rows):
        return Value((1, 1, rows, array.shape[-1]), const=np.broadcast_to(array, (1, 1, rows, array.shape[-1])))

    def gates(value, weight, bias):  # value @ weight^T + bias
        return binary(lw, "add", _matmul_values(lw, value, weight, False, False), bias)

    w_hh4, b_hh4 = const4(w_hh.T, hidden), const4(b_hh, batch)
    sequence_in = _reshaped(x, (1, 1, steps * batch, features))
    inputs = gates(sequence_in, const4(w_ih.T, features), const4(b_ih, steps * batch))  # all steps at once
    h = _reshaped(state, (1, 1, batch, hidden))
    outputs = []
    for step in range(steps):
        xg = crop(lw, inputs, 2, step * batch, batch)
        hg = gates(h, w_hh4, b_hh4)
        rz = lw.activation(binary(lw, "add", crop(lw, xg, 3, 0, 2 * hidden), crop(lw, hg, 3, 0, 2 * hidden)),
                           {"sigmoid": {}})
        r, z = crop(lw, rz, 3, 0, hidden), crop(lw, rz, 3, hidden, hidden)
        c = lw.activation(binary(lw, "add", crop(lw, xg, 3, 2 * hidden, hidden),
                                 binary(lw, "mul", r, crop(lw, hg, 3, 2 * hidden, hidden))), {"tanh": {}})
        h = binary(lw, "add", binary(lw, "mul", binary(lw, "sub", h, c), z), c)
        outputs.append(h)
    lw.passes[f"GRU unrolled over {steps} steps"] += 1
    sequence = _reshaped(concat(lw, outputs, 2), (steps, batch, hidden))
    last = Value((1,), items=[_reshaped(h, (1, batch, hidden))])
    placeholder = Value((1,), const=np.zeros(1, np.float32))
    return [sequence, placeholder, last, placeholder]


@handles("pd_op.pad3d")
def _pad3d(lw, op, ins):
    x, pads = ins[0], _ints(ins[1], "pad3d paddings")
    fmt = op.attrs.get("data_format", "NCDHW")
    mode = op.attrs.get("mode", "constant")
    if fmt != "NCDHW" or mode not in ("constant", "reflect", "replicate"):
        raise Unsupported(f"pad3d with data_format {fmt}, mode {mode}")
    if len(x.shape) != 5 or x.shape[2] != 1 or pads[4] or pads[5]:
        raise Unsupported("pad3d over depth (only the 2-D padding of F.pad on NCHW converts)")
    if min(pads) < 0:
        raise Unsupported("negative pad3d paddings")
    n, c, _, h, w = x.shape
    shape4 = (n, c, h + pads[2] + pads[3], w + pads[0] + pads[1])
    out = lw.emit("pad3d", {"X": [lw.var_of(x, (n, c, h, w))]}, shape4,
                  {"paddings": pads, "mode": mode, "value": _fmt_float(op.attrs.get("pad_value", 0.0))})
    return [Value((n, c, 1) + shape4[2:], var=out)]


def _size_from_tensors(ins) -> list[int] | None:
    """The output size a resize reads from its size inputs, when folding made them constants (the size of a
    static shape, as ``F.interpolate(x, size=paddle.shape(y)[2:])`` gives); None without size inputs."""
    out_size, size_list, scale_tensor = (list(ins[1:4]) + [None] * 3)[:3]
    if scale_tensor is not None:
        raise Unsupported("interpolation with a run-time scale tensor")
    if size_list is not None:  # SizeTensor (a list of scalars) wins over OutSize, as in Paddle's kernel
        items = size_list.items if size_list.items is not None else [size_list]
        size = [int(v) for item in items for v in _const(item, "the resize size").reshape(-1)]
    elif out_size is not None:
        size = _ints(out_size, "the resize size")
    else:
        return None
    if len(size) != 2 or min(size) <= 0:
        raise Unsupported(f"resize to {size}")
    return size


def _interp(lw, op, ins, type_):
    _check_nchw(op)
    x = ins[0]
    if len(x.shape) != 4:
        raise Unsupported("interpolation of a non 4-D tensor")
    n, c, h, w = x.shape
    oh, ow = int(op.attrs.get("out_h", -1)), int(op.attrs.get("out_w", -1))
    scale = [float(s) for s in op.attrs.get("scale", [])]
    size = _size_from_tensors(ins)
    if size is not None:
        if scale and min(scale) > 0:  # Paddle would then sample with 1/scale, not in/out: not the same resize
            raise Unsupported(f"interpolation with both a size tensor and a scale {scale}")
        oh, ow = size
    if oh <= 0 or ow <= 0:
        if len(scale) < 2 or min(scale) <= 0:
            raise Unsupported("interpolation without output size or scale")
        oh, ow = int(h * scale[0]), int(w * scale[1])
        if not (float(oh) / h == scale[0] and float(ow) / w == scale[1]):
            raise Unsupported(f"interpolation with a non-integral output size for scale {scale}")
    align_corners = bool(op.attrs.get("align_corners", False))
    if align_corners and (h == 1 or w == 1):
        raise Unsupported("align_corners interpolation from a size-1 dimension")
    attrs = {"align_corners": align_corners, "align_mode": int(op.attrs.get("align_mode", 1)),
             "out_h": oh, "out_w": ow}
    if type_ == "nearest_interp_v2" and align_corners:
        raise Unsupported("nearest interpolation with align_corners")
    out = lw.emit(type_, {"X": [lw.var_of(x)]}, (n, c, oh, ow), attrs)
    return [Value((n, c, oh, ow), var=out)]


HANDLERS["pd_op.bilinear_interp"] = lambda lw, op, ins: _interp(lw, op, ins, "bilinear_interp_v2")
HANDLERS["pd_op.nearest_interp"] = lambda lw, op, ins: _interp(lw, op, ins, "nearest_interp_v2")


# ---------------------------------------------------------------- graph passes


def _consumers(ops: list[dict]) -> dict[str, list[dict]]:
    users: dict[str, list[dict]] = defaultdict(list)
    for op in ops:
        for names in op["inputs"].values():
            for name in names:
                users[name].append(op)
    return users


def _out(op: dict) -> str:
    return op["outputs"]["Out"][0]


def eliminate_dead(ops: list[dict], output: str) -> list[dict]:
    producers = {_out(op): op for op in ops}
    live, stack = set(), [output]
    while stack:
        name = stack.pop()
        op = producers.get(name)
        if op is None or id(op) in live:
            continue
        live.add(id(op))
        stack.extend(n for names in op["inputs"].values() for n in names)
    return [op for op in ops if id(op) in live or op["type"] == "feed"]


def fuse_conv_bias(ops, weights, var_shapes, output, passes) -> list[dict]:
    """conv2d(_transpose) + elementwise_add(constant [C], axis=1) -> conv with a Bias input."""
    users = _consumers(ops)
    dropped = set()
    for op in ops:
        if op["type"] not in ("conv2d", "conv2d_transpose") or "Bias" in op["inputs"]:
            continue
        out = _out(op)
        nxt = users.get(out, [])
        if out == output or len(nxt) != 1 or nxt[0]["type"] != "elementwise_add":
            continue
        add = nxt[0]
        bias = add["inputs"]["Y"][0]
        if add["inputs"]["X"][0] != out or bias not in weights or add["attrs"].get("axis") != 1:
            continue
        if var_shapes[bias] != (var_shapes[out][1],) or add["attrs"].get("fuse_opt"):
            continue
        op["inputs"]["Bias"] = [bias]
        op["outputs"]["Out"] = add["outputs"]["Out"]
        dropped.add(id(add))
        passes["conv + bias add fused"] += 1
    return [op for op in ops if id(op) not in dropped]


def fold_batchnorm(ops, weights, var_shapes, output, passes, new_weight) -> list[dict]:
    """conv2d + batchnorm (constants) -> conv2d with scaled filter and bias."""
    users = _consumers(ops)
    dropped = set()
    for op in ops:
        if op["type"] != "conv2d" or op["attrs"].get("fuse_opt"):
            continue
        out = _out(op)
        nxt = users.get(out, [])
        filt = op["inputs"]["Filter"][0]
        if out == output or len(nxt) != 1 or nxt[0]["type"] != "batchnorm" or filt not in weights:
            continue
        if len(users.get(filt, [])) != 1:
            continue
        bn = nxt[0]
        names = {k: bn["inputs"][k][0] for k in ("Scale", "Bias", "Mean", "Variance")}
        if not all(n in weights for n in names.values()):
            continue
        w = {k: weights[n].astype(np.float64) for k, n in names.items()}
        a = w["Scale"] / np.sqrt(w["Variance"] + float(bn["attrs"]["epsilon"]))
        old_bias = weights[op["inputs"]["Bias"][0]].astype(np.float64) if "Bias" in op["inputs"] else 0.0
        f = weights[filt].astype(np.float64) * a.reshape(-1, 1, 1, 1)
        op["inputs"]["Filter"] = [new_weight(f)]
        op["inputs"]["Bias"] = [new_weight(w["Bias"] + (old_bias - w["Mean"]) * a)]
        op["outputs"]["Out"] = bn["outputs"]["Out"]
        dropped.add(id(bn))
        passes["conv + batch_norm folded"] += 1
    return [op for op in ops if id(op) not in dropped]


def fuse_activations(ops, output, passes) -> list[dict]:
    """Move an activation (identity scale op with fuse_opt) into the op producing its input."""
    producers = {_out(op): op for op in ops}
    users = _consumers(ops)
    dropped = set()
    for op in ops:
        if not op["attrs"].get("hwd_act"):
            continue
        src = op["inputs"]["X"][0]
        prod = producers.get(src)
        if prod is None or prod["type"] == "feed" or src == output or len(users.get(src, [])) != 1:
            continue
        fuse = prod["attrs"].setdefault("fuse_opt", {})
        if any(k in fuse for k in op["attrs"]["fuse_opt"]):
            continue
        fuse.update(op["attrs"]["fuse_opt"])
        prod["outputs"]["Out"] = op["outputs"]["Out"]
        producers[_out(prod)] = prod
        dropped.add(id(op))
        passes["activation fused into producer"] += 1
    kept = [op for op in ops if id(op) not in dropped]
    for op in kept:
        op["attrs"].pop("hwd_act", None)
    return kept


def single_image_reader(ops, lw) -> list[dict]:
    """Give the input one reader: Paddle.js uploads a new input only for the first op (in list order)
    reading it, so another reader scheduled earlier would see the previous run's data."""
    readers = [op for op in ops if any("image" in names for names in op["inputs"].values())]
    if len(readers) <= 1:
        return ops
    copy = lw.new_var(lw.var_shapes["image"])
    for op in readers:
        for slot, names in op["inputs"].items():
            op["inputs"][slot] = [copy if n == "image" else n for n in names]
    lw.passes["input copied once for its readers"] += 1
    first = {"type": "scale", "inputs": {"X": ["image"]}, "outputs": {"Out": [copy]},
             "attrs": {"scale": 1.0, "bias": 0.0, "bias_after_scale": True}}
    return [ops[0], first] + ops[1:] if ops and ops[0]["type"] == "feed" else [first] + ops


def _drop_unused_weights(ops, weights):
    used = {n for op in ops for names in op["inputs"].values() for n in names}
    return {n: w for n, w in weights.items() if n in used}


# ---------------------------------------------------------------- entry point


def lower(program_path: Path, params_path: Path | None, *, batch: int = 1,
          input_shape: list[int] | None = None) -> ConvertedModel:
    """Convert a PIR program to an in-memory Paddle.js model (see :func:`write`)."""
    program = load_pir_program(program_path)
    params = read_params(params_path, sorted(n for n, _, _ in program.parameters)) if params_path else {}
    lw = Lowering(program, params, batch=batch, input_shape=input_shape)
    lw.run()
    if lw.host is not None:
        out_name, out_value, dynamic_batch = "exports", _packed_exports(lw), False
    else:
        out_name, out_value, dynamic_batch = lw.fetch[0]
    if out_value.var is None and out_value.const is not None:
        raise ConversionError("the model's output does not depend on its input")
    final = lw.var_of(out_value)
    if final == "image":  # the shaders need at least one op between feed and fetch
        final = lw.scale(out_value, 1.0, 0.0).var
    ops = eliminate_dead(lw.ops, final)
    ops = fuse_conv_bias(ops, lw.weights, lw.var_shapes, final, lw.passes)
    ops = fold_batchnorm(ops, lw.weights, lw.var_shapes, final, lw.passes, lw.weight)
    ops = fuse_activations(ops, final, lw.passes)
    # The output must come from the last op the runner executes, i.e. be the graph's only sink.
    ops = eliminate_dead(ops, final)
    ops = single_image_reader(ops, lw)
    if not any(_out(op) == final for op in ops):
        raise ConversionError("internal: the output var has no producer")
    ops.append({"type": "fetch", "inputs": {"X": [final]}, "outputs": {"Out": ["fetch"]}, "attrs": {}})
    weights = _drop_unused_weights(ops, lw.weights)
    used = {n for op in ops for slot in list(op["inputs"].values()) + list(op["outputs"].values()) for n in slot}
    used -= {"feed", "fetch"}
    variables = {}
    for name in sorted(used):  # Paddle.js hands weight data to persistable vars in this order
        variables[name] = {"name": name, "shape": list(lw.var_shapes[name]) or [1], "persistable": name in weights}
    order = [n for n in variables if n in weights]
    flat = np.concatenate([weights[n].reshape(-1) for n in order]) if order else np.zeros(0, np.float32)
    n, c, h, w = _pad4(lw.var_shapes["image"])
    model = {"ops": ops, "vars": variables, "chunkNum": 0, "dataLayout": "nchw",
             "feedShape": {"fc": n * c, "fh": h, "fw": w}}
    out_shape = list(out_value.shape) or [1]
    host = None
    if lw.host is not None:
        host = lw.host.program()
        # The page runs a fixed batch; a larger one is split when every export is per sample (batch first).
        host["batched"] = lw.input_info["batch"] is not None and all(
            v.shape and v.shape[0] == batch for _r, v in lw.host.exports)
    return ConvertedModel(model, flat.astype("<f4"), lw.input_info,
                          {"name": out_name, "shape": out_shape, "dtype": "float32",
                           "var_shape": list(lw.var_shapes[final]), "dynamic_batch": dynamic_batch},
                          lw.passes, Counter(op.type for op in program.ops), host, lw.embedding_table)


def _packed_exports(lw: Lowering) -> Value:
    """The page's one output in a model with a host stage: every export flattened, side by side."""
    if not lw.host.exports:
        raise ConversionError("the model's outputs do not depend on its first input: nothing runs on the page")
    parts = [_reshaped(v, (1, v.size, 1, 1)) for _r, v in lw.host.exports]
    if len(parts) > 1:
        lw.passes["exports packed into the one output"] += 1
    return concat(lw, parts, 1)


def write(converted: ConvertedModel, output_dir: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict[str, Any]:
    """Write model.json + chunk_1..N.dat into ``output_dir``; return the size report."""
    output_dir = Path(output_dir)
    data = converted.weights.tobytes()
    chunk_bytes = max(4, chunk_bytes // 4 * 4)
    chunks = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or []
    files = []
    for i, chunk in enumerate(chunks, 1):
        (output_dir / f"chunk_{i}.dat").write_bytes(chunk)
        files.append(f"chunk_{i}.dat")
    converted.model["chunkNum"] = len(chunks)
    text = json.dumps(converted.model, separators=(",", ":"))
    (output_dir / "model.json").write_text(text)
    total = len(text) + len(data)
    if converted.embedding is not None:
        np.save(output_dir / EMBEDDING_FILE, converted.embedding, allow_pickle=False)
        files.append(EMBEDDING_FILE)
        total += converted.embedding.nbytes
    report = {
        "model_json_bytes": len(text), "weights_bytes": len(data), "total_bytes": total, "chunks": len(chunks),
        "guidance_bytes": SIZE_GUIDANCE_BYTES, "within_guidance": total <= SIZE_GUIDANCE_BYTES,
        "note": (f"{total / 1e6:.2f} MB: within" if total <= SIZE_GUIDANCE_BYTES else f"{total / 1e6:.2f} MB: over")
        + f" the ~{SIZE_GUIDANCE_BYTES / 1e6:.0f} MB Paddle.js guidance for browser delivery",
    }
    return {"files": ["model.json"] + files, "size": report}
