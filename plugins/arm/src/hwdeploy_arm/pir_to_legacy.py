"""Translate a Paddle 3 PIR program (``.json``) into a legacy ProgramDesc that Paddle Lite can load.

Paddle Lite 2.13 reads only the legacy ``.pdmodel`` format, and Paddle 3 cannot write it for every
model. This translator covers the ops Lite has kernels for that inference models use (convolutions,
norms, activations, elementwise and matmul, pooling, reshaping, embedding, slicing, reductions,
interpolation, GRU/LSTM through ``rnn``...), mapping each PIR op (``pd_op.conv2d``) to its legacy
twin (``conv2d``) with the legacy input/output slots and attribute types. Constant operands that
legacy ops take as attributes (reshape's shape, pool2d's kernel size, concat's axis) are folded
from ``pd_op.full``/``pd_op.full_int_array``. Anything else raises
:class:`~hwdeploy.errors.UnsupportedOpsError` naming every untranslatable op.

The parameter file is reused as is: PIR and legacy both store parameters sorted by name, and every
``builtin.parameter`` becomes a persistable variable of the same name.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from hwdeploy.errors import UnsupportedOpsError
from hwdeploy.sdk.paddle_format import PirOp, PirProgram

from hwdeploy_arm.program import DENSE_TENSOR, DTYPE_CODES, FEED_MINIBATCH, FETCH_LIST, framework_pb2, set_attr


class _NotConstant(Exception):
    pass


class _Untranslatable(Exception):
    """An op this translator knows but cannot express in this configuration (reason in the message)."""


class _Upstream(Exception):
    """An operand comes from an op that was not translated (already reported): skip quietly."""


class Translator:
    """Builds the ProgramDesc op by op; see :func:`translate`."""

    def __init__(self, pir: PirProgram):
        self.pir = pir
        self.pb2 = framework_pb2()
        self.program = self.pb2.ProgramDesc()
        self.block = self.program.blocks.add()
        self.block.idx, self.block.parent_idx = 0, -1
        self.names: dict[int, str] = {}  # PIR value id -> variable name
        self.types: dict[int, tuple[str, tuple[int, ...]]] = {}
        self.consts: dict[int, tuple[Any, str]] = {}  # value id -> (python value, dtype)
        self.lists: dict[int, list[int]] = {}  # builtin.combine results
        self.vectors: dict[int, list[str]] = {}  # a vector result (meshgrid's) -> its variables, for builtin.split
        self.var_types: dict[str, tuple[str, tuple[int, ...], bool]] = {}  # name -> (dtype, dims, persistable)
        self.counts: Counter = Counter()
        self.unsupported: Counter = Counter()
        self.reasons: dict[str, str] = {}
        self.feeds: list[str] = []
        self.fetches: list[tuple[int, str]] = []
        self.saved = {name for name, _, _ in pir.parameters}

    # ------------------------------------------------------------------ values
    def var(self, vid: int | None) -> str:
        """The variable holding value ``vid``, materialising a folded constant if needed."""
        if vid in self.names:
            return self.names[vid]
        if vid in self.consts:
            value, dtype = self.consts[vid]
            values = value if isinstance(value, list) else [value]
            if len(set(values)) != 1:
                raise _Untranslatable("a constant list of different values used as a tensor")
            name = self.new_var("fill_constant", dtype, (len(values),))
            self.emit_fill(name, [len(values)], values[0], dtype)
            self.names[vid] = name
            return name
        raise _Upstream(vid)

    def const(self, vid: int | None) -> Any:
        if vid in self.consts:
            return self.consts[vid][0]
        raise _NotConstant(vid)

    def int_list(self, vid: int | None) -> list[int]:
        value = self.const(vid)
        return [int(v) for v in (value if isinstance(value, list) else [value])]

    def dtype(self, vid: int | None) -> str:
        if vid in self.consts:
            return self.consts[vid][1]
        return self.types.get(vid, ("float32", ()))[0]

    def new_var(self, stem: str, dtype: str, shape: tuple[int, ...], persistable: bool = False) -> str:
        self.counts[stem] += 1
        name = f"{stem}_{self.counts[stem] - 1}.tmp"
        self.var_types[name] = (dtype, shape, persistable)
        return name

    def outputs(self, op: PirOp, stem: str) -> list[str]:
        """Variables for every output of ``op`` (registered under their PIR value ids)."""
        names = []
        for vid, vtype in zip(op.outputs, op.output_types):
            dtype, shape = vtype or ("float32", ())
            name = self.new_var(stem, dtype, shape)
            if vid is not None:
                self.names[vid] = name
                self.types[vid] = (dtype, shape)
            names.append(name)
        return names

    def as_int32(self, vid: int) -> str:
        """A 1-element int32 variable for ``vid`` (Lite's shape-tensor inputs read int32)."""
        if vid in self.consts:
            value = self.int_list(vid)
            name = self.new_var("fill_constant", "int32", (1,))
            self.emit_fill(name, [1], value[0], "int32")
            return name
        source = self.var(vid)
        if self.dtype(vid) == "int32":
            return source
        name = self.new_var("cast", "int32", (1,))
        self.emit("cast", {"X": [source]}, {"Out": [name]},
                  {"in_dtype": ("INT", DTYPE_CODES[self.dtype(vid)]), "out_dtype": ("INT", DTYPE_CODES["int32"])})
        return name

    # ------------------------------------------------------------------ ops
    def emit(self, op_type: str, inputs: dict[str, list[str]], outputs: dict[str, list[str]],
             attrs: dict[str, tuple[str, Any]]) -> None:
        op = self.block.ops.add()
        op.type = op_type
        for slots, target in ((inputs, op.inputs), (outputs, op.outputs)):
            for slot, args in sorted(slots.items()):
                entry = target.add()
                entry.parameter = slot
                entry.arguments.extend(args)
        for name, (kind, value) in sorted(attrs.items()):
            set_attr(op, name, kind, value)

    def emit_fill(self, name: str, shape: list[int], value: Any, dtype: str) -> None:
        self.emit("fill_constant", {}, {"Out": [name]},
                  {"shape": ("LONGS", [int(d) for d in shape] or [1]), "value": ("FLOAT", float(value)),
                   "str_value": ("STRING", repr(float(value)) if dtype.startswith("float") else str(int(value))),
                   "dtype": ("INT", DTYPE_CODES[dtype]), "force_cpu": ("BOOLEAN", False)})

    def translate_op(self, op: PirOp) -> None:
        try:
            self._translate_op(op)
        except _Upstream:
            if not self.unsupported:  # an operand nobody produced: a malformed program
                raise UnsupportedOpsError(f"{op.type} reads a value no op of the program produces", [op.type])

    def _translate_op(self, op: PirOp) -> None:
        kind = op.type
        if kind == "builtin.parameter":
            name = op.attrs["parameter_name"]
            dtype, shape = op.output_types[0] or ("float32", ())
            self.names[op.outputs[0]] = name
            self.types[op.outputs[0]] = (dtype, shape)
            # Only the parameters the .pdiparams file holds are persistable (Paddle marks run-time state
            # such as an RNN's dropout state "__non_persistable" and does not save it).
            self.var_types[name] = (dtype, shape, name in self.saved)
            return
        if kind == "pd_op.data":
            name = op.attrs["name"]
            dtype, shape = op.output_types[0] or (op.attrs.get("dtype", "float32"), tuple(op.attrs.get("shape", ())))
            self.names[op.outputs[0]] = name
            self.types[op.outputs[0]] = (dtype, shape)
            self.var_types[name] = (dtype, tuple(shape), False)
            self.emit("feed", {"X": ["feed"]}, {"Out": [name]}, {"col": ("INT", len(self.feeds))})
            self.feeds.append(name)
            return
        if kind == "pd_op.fetch":
            self.fetches.append((int(op.attrs.get("col", len(self.fetches))), self.var(op.inputs[0])))
            return
        if kind == "pd_op.full_int_array":
            self.consts[op.outputs[0]] = ([int(v) for v in op.attrs["value"]], op.attrs.get("dtype", "int64"))
            self.types[op.outputs[0]] = op.output_types[0] or ("int64", ())
            return
        if kind == "pd_op.full":
            dtype = op.attrs.get("dtype", "float32")
            value = op.attrs["value"]
            shape = list(op.attrs.get("shape") or [])
            if len(shape) <= 1 and (not shape or shape[0] == 1):
                self.consts[op.outputs[0]] = (value, dtype)
                self.types[op.outputs[0]] = (dtype, tuple(shape))
            else:  # a real tensor of a constant: no folding
                name = self.outputs(op, "fill_constant")[0]
                self.emit_fill(name, shape, value, dtype)
            return
        if kind == "builtin.combine":
            self.lists[op.outputs[0]] = list(op.inputs)
            return
        rule = RULES.get(kind) or (RULES.get(kind[:-1]) if kind.endswith("_") else None)
        if rule is None:
            self.unsupported[kind] += 1
            return
        try:
            rule(self, op)
        except (_NotConstant, _Untranslatable) as exc:
            self.unsupported[kind] += 1
            why = "an operand the legacy op needs as an attribute is computed at run time" if isinstance(
                exc, _NotConstant) else str(exc)
            self.reasons.setdefault(kind, why)

    # ------------------------------------------------------------------ finish
    def finish(self):
        for col, name in sorted(self.fetches):
            self.emit("fetch", {"X": [name]}, {"Out": ["fetch"]}, {"col": ("INT", col)})
        for name in sorted(self.var_types):
            dtype, shape, persistable = self.var_types[name]
            var = self.block.vars.add()
            var.name = name
            var.type.type = DENSE_TENSOR
            var.type.dense_tensor.tensor.data_type = DTYPE_CODES.get(dtype, DTYPE_CODES["float32"])
            var.type.dense_tensor.tensor.dims.extend(int(d) for d in shape)
            var.persistable = persistable
        for name, kind in (("feed", FEED_MINIBATCH), ("fetch", FETCH_LIST)):
            var = self.block.vars.add()
            var.name = name
            var.type.type = kind
            var.persistable = True
        self.program.version.version = 0
        return self.program


def translate(pir: PirProgram):
    """The legacy ProgramDesc for ``pir`` (see the module docstring); raises UnsupportedOpsError."""
    translator = Translator(pir)
    for op in pir.ops:
        translator.translate_op(op)
    if translator.unsupported:
        listed = ", ".join(f"{kind} x{n}" + (f" ({translator.reasons[kind]})" if kind in translator.reasons else "")
                           for kind, n in sorted(translator.unsupported.items()))
        raise UnsupportedOpsError(f"cannot translate this PIR program to a legacy program for Paddle Lite:"
                                  f" no translation for {listed}", sorted(translator.unsupported))
    if not translator.fetches:
        raise UnsupportedOpsError("the PIR program has no pd_op.fetch: nothing to return", [])
    return translator.finish()


def supported_pir_ops() -> list[str]:
    """The PIR op types the translator handles (besides data/fetch/parameter/full/combine)."""
    return sorted(RULES)


# ------------------------------------------------------------------------------------------- rules

Rule = Callable[[Translator, PirOp], None]
RULES: dict[str, Rule] = {}


def _unary(legacy: str, attrs: Callable[[dict], dict] = lambda a: {}) -> Rule:
    def rule(t: Translator, op: PirOp) -> None:
        out = t.outputs(op, legacy)
        t.emit(legacy, {"X": [t.var(op.inputs[0])]}, {"Out": out[:1]}, attrs(op.attrs))
    return rule


for _name in ("relu", "sigmoid", "tanh", "exp", "sqrt", "abs", "log", "square", "rsqrt", "floor", "sin", "cos",
              "assign"):
    RULES[f"pd_op.{_name}"] = _unary(_name)
RULES["pd_op.relu6"] = _unary("relu6", lambda a: {"threshold": ("FLOAT", 6.0)})
RULES["pd_op.gelu"] = _unary("gelu", lambda a: {"approximate": ("BOOLEAN", bool(a.get("approximate", False)))})
RULES["pd_op.leaky_relu"] = _unary("leaky_relu", lambda a: {"alpha": ("FLOAT", float(a.get("negative_slope", 0.02)))})
RULES["pd_op.elu"] = _unary("elu", lambda a: {"alpha": ("FLOAT", float(a.get("alpha", 1.0)))})
RULES["pd_op.hardswish"] = _unary("hard_swish", lambda a: {"threshold": ("FLOAT", 6.0), "scale": ("FLOAT", 6.0),
                                                           "offset": ("FLOAT", 3.0)})
RULES["pd_op.hardsigmoid"] = _unary("hard_sigmoid", lambda a: {"slope": ("FLOAT", float(a.get("slope", 0.2))),
                                                               "offset": ("FLOAT", float(a.get("offset", 0.5)))})
RULES["pd_op.swish"] = _unary("swish", lambda a: {"beta": ("FLOAT", 1.0)})
RULES["pd_op.silu"] = _unary("swish", lambda a: {"beta": ("FLOAT", 1.0)})
RULES["pd_op.softmax"] = _unary("softmax", lambda a: {"axis": ("INT", int(a.get("axis", -1)))})
RULES["pd_op.log_softmax"] = _unary("log_softmax", lambda a: {"axis": ("INT", int(a.get("axis", -1)))})
RULES["pd_op.transpose"] = _unary("transpose2", lambda a: {"axis": ("INTS", [int(v) for v in a["perm"]])})
RULES["pd_op.flatten"] = _unary("flatten_contiguous_range", lambda a: {
    "start_axis": ("INT", int(a.get("start_axis", 1))), "stop_axis": ("INT", int(a.get("stop_axis", -1)))})


def _binary(legacy: str) -> Rule:
    def rule(t: Translator, op: PirOp) -> None:
        out = t.outputs(op, legacy)
        t.emit(legacy, {"X": [t.var(op.inputs[0])], "Y": [t.var(op.inputs[1])]}, {"Out": out[:1]},
               {"axis": ("INT", -1)})
    return rule


for _pir, _legacy in (("add", "elementwise_add"), ("subtract", "elementwise_sub"), ("multiply", "elementwise_mul"),
                      ("divide", "elementwise_div"), ("maximum", "elementwise_max"), ("minimum", "elementwise_min"),
                      ("elementwise_pow", "elementwise_pow")):
    RULES[f"pd_op.{_pir}"] = _binary(_legacy)


def _matmul(t: Translator, op: PirOp) -> None:
    out = t.outputs(op, "matmul_v2")
    t.emit("matmul_v2", {"X": [t.var(op.inputs[0])], "Y": [t.var(op.inputs[1])]}, {"Out": out[:1]},
           {"trans_x": ("BOOLEAN", bool(op.attrs.get("transpose_x", False))),
            "trans_y": ("BOOLEAN", bool(op.attrs.get("transpose_y", False)))})


RULES["pd_op.matmul"] = _matmul


def _conv_attrs(a: dict) -> dict:
    return {"strides": ("INTS", list(a["strides"])), "paddings": ("INTS", list(a["paddings"])),
            "dilations": ("INTS", list(a["dilations"])), "groups": ("INT", int(a.get("groups", 1))),
            "padding_algorithm": ("STRING", a.get("padding_algorithm", "EXPLICIT")),
            "data_format": ("STRING", a.get("data_format", "NCHW"))}


def _conv(legacy: str) -> Rule:
    def rule(t: Translator, op: PirOp) -> None:
        out = t.outputs(op, legacy)
        t.emit(legacy, {"Input": [t.var(op.inputs[0])], "Filter": [t.var(op.inputs[1])]}, {"Output": out[:1]},
               _conv_attrs(op.attrs))
    return rule


RULES["pd_op.conv2d"] = _conv("conv2d")
RULES["pd_op.depthwise_conv2d"] = _conv("depthwise_conv2d")


def _conv_transpose(legacy: str) -> Rule:
    def rule(t: Translator, op: PirOp) -> None:
        attrs = _conv_attrs(op.attrs)
        attrs["output_padding"] = ("INTS", [int(v) for v in op.attrs.get("output_padding") or []])
        size = op.inputs[2] if len(op.inputs) > 2 else None
        attrs["output_size"] = ("INTS", t.int_list(size) if size else [])
        out = t.outputs(op, legacy)
        t.emit(legacy, {"Input": [t.var(op.inputs[0])], "Filter": [t.var(op.inputs[1])]}, {"Output": out[:1]}, attrs)
    return rule


RULES["pd_op.conv2d_transpose"] = _conv_transpose("conv2d_transpose")
RULES["pd_op.depthwise_conv2d_transpose"] = _conv_transpose("depthwise_conv2d_transpose")


def _batch_norm(t: Translator, op: PirOp) -> None:
    x, mean, variance, scale, bias = (t.var(v) for v in op.inputs[:5])
    out = t.outputs(op, "batch_norm")
    # MeanOut/VarianceOut alias the running statistics, as in programs Paddle 2 wrote.
    t.names[op.outputs[1]], t.names[op.outputs[2]] = mean, variance
    t.emit("batch_norm", {"X": [x], "Mean": [mean], "Variance": [variance], "Scale": [scale], "Bias": [bias]},
           {"Y": [out[0]], "MeanOut": [mean], "VarianceOut": [variance], "SavedMean": [out[3]],
            "SavedVariance": [out[4]]},
           {"epsilon": ("FLOAT", float(op.attrs["epsilon"])), "momentum": ("FLOAT", float(op.attrs["momentum"])),
            "is_test": ("BOOLEAN", True), "data_layout": ("STRING", op.attrs.get("data_format", "NCHW")),
            "use_global_stats": ("BOOLEAN", bool(op.attrs.get("use_global_stats", False))),
            "trainable_statistics": ("BOOLEAN", False)})


RULES["pd_op.batch_norm"] = _batch_norm


def _layer_norm(t: Translator, op: PirOp) -> None:
    out = t.outputs(op, "layer_norm")
    inputs = {"X": [t.var(op.inputs[0])]}
    if len(op.inputs) > 1 and op.inputs[1]:
        inputs["Scale"] = [t.var(op.inputs[1])]
    if len(op.inputs) > 2 and op.inputs[2]:
        inputs["Bias"] = [t.var(op.inputs[2])]
    t.emit("layer_norm", inputs, {"Y": [out[0]], "Mean": [out[1]], "Variance": [out[2]]},
           {"epsilon": ("FLOAT", float(op.attrs["epsilon"])),
            "begin_norm_axis": ("INT", int(op.attrs["begin_norm_axis"]))})


RULES["pd_op.layer_norm"] = _layer_norm


def _pool2d(t: Translator, op: PirOp) -> None:
    a = op.attrs
    out = t.outputs(op, "pool2d")
    t.emit("pool2d", {"X": [t.var(op.inputs[0])]}, {"Out": out[:1]},
           {"ksize": ("INTS", t.int_list(op.inputs[1])), "strides": ("INTS", [int(v) for v in a["strides"]]),
            "paddings": ("INTS", [int(v) for v in a["paddings"]]), "pooling_type": ("STRING", a["pooling_type"]),
            "global_pooling": ("BOOLEAN", bool(a.get("global_pooling", False))),
            "adaptive": ("BOOLEAN", bool(a.get("adaptive", False))), "ceil_mode": ("BOOLEAN", bool(a["ceil_mode"])),
            "exclusive": ("BOOLEAN", bool(a.get("exclusive", True))),
            "data_format": ("STRING", a.get("data_format", "NCHW")),
            "padding_algorithm": ("STRING", a.get("padding_algorithm", "EXPLICIT")), "use_cudnn": ("BOOLEAN", False)})


RULES["pd_op.pool2d"] = _pool2d


def _reshape(t: Translator, op: PirOp) -> None:
    inputs = {"X": [t.var(op.inputs[0])]}
    try:
        attrs = {"shape": ("INTS", t.int_list(op.inputs[1]))}
    except _NotConstant:
        inputs["ShapeTensor"] = [t.as_int32(v) for v in t.lists[op.inputs[1]]] if op.inputs[1] in t.lists else []
        if not inputs["ShapeTensor"]:
            inputs = {"X": inputs["X"], "Shape": [t.var(op.inputs[1])]}
        attrs = {"shape": ("INTS", [])}
    out = t.outputs(op, "reshape2")
    t.emit("reshape2", inputs, {"Out": out[:1]}, attrs)


RULES["pd_op.reshape"] = _reshape


def _squeeze(legacy: str) -> Rule:
    def rule(t: Translator, op: PirOp) -> None:
        out = t.outputs(op, legacy)
        t.emit(legacy, {"X": [t.var(op.inputs[0])]}, {"Out": out[:1]}, {"axes": ("INTS", t.int_list(op.inputs[1]))})
    return rule


RULES["pd_op.unsqueeze"] = _squeeze("unsqueeze2")
RULES["pd_op.squeeze"] = _squeeze("squeeze2")


def _scale(t: Translator, op: PirOp) -> None:
    inputs = {"X": [t.var(op.inputs[0])]}
    try:
        attrs = {"scale": ("FLOAT", float(t.const(op.inputs[1])))}
    except _NotConstant:
        inputs["ScaleTensor"] = [t.var(op.inputs[1])]
        attrs = {"scale": ("FLOAT", 1.0)}
    attrs.update(bias=("FLOAT", float(op.attrs.get("bias", 0.0))),
                 bias_after_scale=("BOOLEAN", bool(op.attrs.get("bias_after_scale", True))))
    out = t.outputs(op, "scale")
    t.emit("scale", inputs, {"Out": out[:1]}, attrs)


RULES["pd_op.scale"] = _scale


def _concat(t: Translator, op: PirOp) -> None:
    items = t.lists.get(op.inputs[0])
    if items is None:
        raise _Untranslatable("concat of a tensor array")
    out = t.outputs(op, "concat")
    t.emit("concat", {"X": [t.var(v) for v in items]}, {"Out": out[:1]},
           {"axis": ("INT", t.int_list(op.inputs[1])[0])})


RULES["pd_op.concat"] = _concat


def _stack(t: Translator, op: PirOp) -> None:
    items = t.lists.get(op.inputs[0])
    if items is None:
        raise _Untranslatable("stack of a tensor array")
    out = t.outputs(op, "stack")
    t.emit("stack", {"X": [t.var(v) for v in items]}, {"Y": out[:1]}, {"axis": ("INT", int(op.attrs.get("axis", 0)))})


RULES["pd_op.stack"] = _stack


def _dropout(t: Translator, op: PirOp) -> None:
    p = float(t.const(op.inputs[2])) if len(op.inputs) > 2 and op.inputs[2] else 0.5
    out = t.outputs(op, "dropout")
    t.emit("dropout", {"X": [t.var(op.inputs[0])]}, {"Out": out[:1], "Mask": out[1:2]},
           {"dropout_prob": ("FLOAT", p), "is_test": ("BOOLEAN", True),
            "dropout_implementation": ("STRING", op.attrs.get("mode", "upscale_in_train")),
            "fix_seed": ("BOOLEAN", bool(op.attrs.get("fix_seed", False))), "seed": ("INT", int(op.attrs.get("seed", 0)))})


RULES["pd_op.dropout"] = _dropout


def _embedding(t: Translator, op: PirOp) -> None:
    out = t.outputs(op, "lookup_table_v2")
    t.emit("lookup_table_v2", {"Ids": [t.var(op.inputs[0])], "W": [t.var(op.inputs[1])]}, {"Out": out[:1]},
           {"padding_idx": ("LONG", int(op.attrs.get("padding_idx", -1)))})


RULES["pd_op.embedding"] = _embedding


def _slice(t: Translator, op: PirOp) -> None:
    a = op.attrs
    inputs = {"Input": [t.var(op.inputs[0])]}
    attrs = {"axes": ("INTS", [int(v) for v in a["axes"]]), "infer_flags": ("INTS", [int(v) for v in a["infer_flags"]]),
             "decrease_axis": ("INTS", [int(v) for v in a.get("decrease_axis", [])])}
    for attr, slot, vid in (("starts", "StartsTensor", op.inputs[1]), ("ends", "EndsTensor", op.inputs[2])):
        try:
            attrs[attr] = ("INTS", t.int_list(vid))
        except _NotConstant:
            inputs[slot] = [t.var(vid)]
            attrs[attr] = ("INTS", [])
    out = t.outputs(op, "slice")
    t.emit("slice", inputs, {"Out": out[:1]}, attrs)


RULES["pd_op.slice"] = _slice


def _reduce(legacy: str) -> Rule:
    def rule(t: Translator, op: PirOp) -> None:
        axes = t.int_list(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] else []
        out = t.outputs(op, legacy)
        t.emit(legacy, {"X": [t.var(op.inputs[0])]}, {"Out": out[:1]},
               {"dim": ("INTS", axes or [0]), "keep_dim": ("BOOLEAN", bool(op.attrs.get("keepdim", False))),
                "reduce_all": ("BOOLEAN", not axes)})
    return rule


RULES["pd_op.mean"] = _reduce("reduce_mean")
RULES["pd_op.sum"] = _reduce("reduce_sum")
RULES["pd_op.max"] = _reduce("reduce_max")
RULES["pd_op.min"] = _reduce("reduce_min")


def _shape(t: Translator, op: PirOp) -> None:
    # Lite's shape op yields int32; PIR's shape64 yields int64: cast to keep the program's dtypes.
    raw = t.new_var("shape", "int32", (-1,))
    t.emit("shape", {"Input": [t.var(op.inputs[0])]}, {"Out": [raw]}, {})
    if op.type.startswith("pd_op.shape64"):
        out = t.outputs(op, "cast")
        t.emit("cast", {"X": [raw]}, {"Out": out[:1]},
               {"in_dtype": ("INT", DTYPE_CODES["int32"]), "out_dtype": ("INT", DTYPE_CODES["int64"])})
    else:
        t.names[op.outputs[0]] = raw
        t.types[op.outputs[0]] = ("int32", (-1,))


RULES["pd_op.shape"] = _shape
RULES["pd_op.shape64"] = _shape


def _cast(t: Translator, op: PirOp) -> None:
    out_dtype = op.attrs["dtype"]
    out = t.outputs(op, "cast")
    t.emit("cast", {"X": [t.var(op.inputs[0])]}, {"Out": out[:1]},
           {"in_dtype": ("INT", DTYPE_CODES[t.dtype(op.inputs[0])]), "out_dtype": ("INT", DTYPE_CODES[out_dtype])})


RULES["pd_op.cast"] = _cast


def _arange(t: Translator, op: PirOp) -> None:
    dtype = op.attrs.get("dtype", "int64")
    names = []
    for vid in op.inputs[:3]:
        if vid in t.consts:
            name = t.new_var("fill_constant", dtype, (1,))
            t.emit_fill(name, [1], t.const(vid), dtype)
            names.append(name)
        else:
            names.append(t.var(vid))
    out = t.outputs(op, "range")
    t.emit("range", {"Start": [names[0]], "End": [names[1]], "Step": [names[2]]}, {"Out": out[:1]}, {})


RULES["pd_op.arange"] = _arange


def _full_with_tensor(t: Translator, op: PirOp) -> None:
    value, shape = op.inputs[0], op.inputs[1]
    dtype = op.attrs.get("dtype", "float32")
    inputs: dict[str, list[str]] = {}
    producer = next((o for o in t.pir.ops if shape in o.outputs), None)
    if producer is not None and producer.type == "pd_op.stack" and producer.inputs[0] in t.lists:
        inputs["ShapeTensorList"] = [t.as_int32(v) for v in t.lists[producer.inputs[0]]]
    else:
        inputs["ShapeTensor"] = [t.var(shape)]
    out = t.outputs(op, "fill_constant")
    scalar = t.const(value)
    t.emit("fill_constant", inputs, {"Out": out[:1]},
           {"shape": ("LONGS", []), "value": ("FLOAT", float(scalar)), "dtype": ("INT", DTYPE_CODES[dtype]),
            "str_value": ("STRING", str(scalar)), "force_cpu": ("BOOLEAN", False)})


RULES["pd_op.full_with_tensor"] = _full_with_tensor


def _size_inputs(t: Translator, op: PirOp, attrs: dict[str, Any]) -> dict[str, list[str]]:
    """The run-time size inputs of a resize as Lite's interpolate_v2 takes them: a size list (``SizeTensor``,
    int32 scalars) or an ``OutSize`` tensor (int32 [2]); a constant size goes into ``out_h``/``out_w``."""
    # An absent optional input is value id 0 (or None).
    out_size, size_list, scale_tensor = [v or None for v in (list(op.inputs[1:4]) + [None] * 3)[:3]]
    if scale_tensor is not None:
        raise _Untranslatable("interpolation with a run-time scale tensor")
    if size_list is not None:
        if size_list not in t.lists:
            raise _Untranslatable("interpolation with a size list not built by builtin.combine")
        return {"SizeTensor": [t.as_int32(v) for v in t.lists[size_list]]}
    if out_size is None:
        return {}
    if out_size in t.consts:
        attrs["out_h"], attrs["out_w"] = t.int_list(out_size)[-2:]
        return {}
    source = t.var(out_size)
    if t.dtype(out_size) == "int32":
        return {"OutSize": [source]}
    name = t.new_var("cast", "int32", (2,))
    t.emit("cast", {"X": [source]}, {"Out": [name]},
           {"in_dtype": ("INT", DTYPE_CODES[t.dtype(out_size)]), "out_dtype": ("INT", DTYPE_CODES["int32"])})
    return {"OutSize": [name]}


def _interp(legacy: str) -> Rule:
    def rule(t: Translator, op: PirOp) -> None:
        a = dict(op.attrs)
        inputs = {"X": [t.var(op.inputs[0])], **_size_inputs(t, op, a)}
        out = t.outputs(op, legacy)
        t.emit(legacy, inputs, {"Out": out[:1]},
               {"data_layout": ("STRING", a.get("data_format", "NCHW")), "out_d": ("INT", int(a.get("out_d", -1))),
                "out_h": ("INT", int(a.get("out_h", -1))), "out_w": ("INT", int(a.get("out_w", -1))),
                "scale": ("FLOATS", [float(v) for v in a.get("scale") or []]),
                "interp_method": ("STRING", a.get("interp_method", legacy.split("_")[0])),
                "align_corners": ("BOOLEAN", bool(a.get("align_corners", False))),
                "align_mode": ("INT", int(a.get("align_mode", 1)))})
    return rule


RULES["pd_op.nearest_interp"] = _interp("nearest_interp_v2")
RULES["pd_op.bilinear_interp"] = _interp("bilinear_interp_v2")


def _meshgrid(t: Translator, op: PirOp) -> None:
    items = t.lists.get(op.inputs[0])
    if items is None:
        raise _Untranslatable("meshgrid of a list not built by builtin.combine")
    dims = tuple(int((t.types.get(v, ("", (-1,)))[1] or (-1,))[0]) for v in items)  # each output: every input's size
    names = [t.new_var("meshgrid", t.dtype(v), dims) for v in items]
    t.emit("meshgrid", {"X": [t.var(v) for v in items]}, {"Out": names}, {})
    t.vectors[op.outputs[0]] = names


RULES["pd_op.meshgrid"] = _meshgrid


def _split_vector(t: Translator, op: PirOp) -> None:
    """builtin.split unpacks a vector result: its outputs are the variables the producing op wrote."""
    names = t.vectors.get(op.inputs[0])
    if names is None or len(names) != len(op.outputs):
        raise _Untranslatable("builtin.split of a vector no translated op produced")
    for vid, name, vtype in zip(op.outputs, names, op.output_types):
        if vtype:  # the unpacked values carry the types the vector op's own result did not
            t.var_types[name] = (vtype[0], tuple(vtype[1]), False)
        if vid is not None:
            t.names[vid] = name
            t.types[vid] = vtype or t.var_types[name][:2]


RULES["builtin.split"] = _split_vector


def _split(t: Translator, op: PirOp) -> None:
    """pd_op.split (sections) and pd_op.split_with_num -> legacy split; builtin.split unpacks the result."""
    x = op.inputs[0]
    if op.type.startswith("pd_op.split_with_num"):
        num, sections, axis_vid = int(op.attrs["num"]), [], op.inputs[1]
    else:
        num, sections, axis_vid = 0, t.int_list(op.inputs[1]), op.inputs[2]
    axis = t.int_list(axis_vid)[0]
    parts = num or len(sections)
    dtype = t.dtype(x)
    names = [t.new_var("split", dtype, ()) for _ in range(parts)]
    t.emit("split", {"X": [t.var(x)]}, {"Out": names},
           {"axis": ("INT", axis), "num": ("INT", num), "sections": ("INTS", sections)})
    t.vectors[op.outputs[0]] = names


RULES["pd_op.split"] = _split
RULES["pd_op.split_with_num"] = _split


def _multiclass_nms3(t: Translator, op: PirOp) -> None:
    a = op.attrs
    inputs = {"BBoxes": [t.var(op.inputs[0])], "Scores": [t.var(op.inputs[1])]}
    if len(op.inputs) > 2 and op.inputs[2]:
        inputs["RoisNum"] = [t.var(op.inputs[2])]
    out = t.outputs(op, "multiclass_nms3")
    t.emit("multiclass_nms3", inputs, {"Out": out[:1], "Index": out[1:2], "NmsRoisNum": out[2:3]},
           {"score_threshold": ("FLOAT", float(a["score_threshold"])), "nms_top_k": ("INT", int(a["nms_top_k"])),
            "keep_top_k": ("INT", int(a["keep_top_k"])), "nms_threshold": ("FLOAT", float(a["nms_threshold"])),
            "normalized": ("BOOLEAN", bool(a.get("normalized", True))), "nms_eta": ("FLOAT", float(a.get("nms_eta", 1.0))),
            "background_label": ("INT", int(a.get("background_label", -1)))})


RULES["pd_op.multiclass_nms3"] = _multiclass_nms3


def _clip(t: Translator, op: PirOp) -> None:
    out = t.outputs(op, "clip")
    t.emit("clip", {"X": [t.var(op.inputs[0])]}, {"Out": out[:1]},
           {"min": ("FLOAT", float(t.const(op.inputs[1]))), "max": ("FLOAT", float(t.const(op.inputs[2])))})


RULES["pd_op.clip"] = _clip


def _rnn(t: Translator, op: PirOp) -> None:
    a = op.attrs
    states, weights = t.lists.get(op.inputs[1]), t.lists.get(op.inputs[2])
    if states is None or weights is None:
        raise _Untranslatable("rnn without explicit state/weight lists")
    inputs = {"Input": [t.var(op.inputs[0])], "PreState": [t.var(v) for v in states],
              "WeightList": [t.var(v) for v in weights]}
    if len(op.inputs) > 3 and op.inputs[3]:
        inputs["SequenceLength"] = [t.var(op.inputs[3])]
    # Outputs: out, dropout_state_out, state (a vector), reserve.
    out = t.new_var("rnn", "float32", op.output_types[0][1] if op.output_types[0] else ())
    t.names[op.outputs[0]] = out
    n_states = len(states)
    state_names = [t.new_var("rnn_state", "float32", ()) for _ in range(n_states)]
    reserve, dropout_state = t.new_var("rnn_reserve", "float32", ()), t.new_var("rnn_dropout_state", "uint8", ())
    t.emit("rnn", inputs, {"Out": [out], "State": state_names, "Reserve": [reserve], "DropoutState": [dropout_state]},
           {"dropout_prob": ("FLOAT", float(a.get("dropout_prob", 0.0))), "is_bidirec": ("BOOLEAN", bool(a["is_bidirec"])),
            "input_size": ("INT", int(a["input_size"])), "hidden_size": ("INT", int(a["hidden_size"])),
            "num_layers": ("INT", int(a["num_layers"])), "mode": ("STRING", a["mode"]), "seed": ("INT", int(a.get("seed", 0))),
            "is_test": ("BOOLEAN", True)})


RULES["pd_op.rnn"] = _rnn
