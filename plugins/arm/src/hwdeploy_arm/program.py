"""Legacy ProgramDesc (``.pdmodel``) handling: reading, the patches Paddle Lite 2.13 needs, I/O specs.

Paddle 3 writes legacy programs that Lite 2.13's ``opt`` no longer accepts as they are: Paddle 3
dropped attributes and outputs that Lite still reads. Each patch below is a small pass over the
program that returns how many places it changed (tests check each one against the failure it
prevents):

- :func:`add_default_attrs`: attributes Lite's op definitions read but Paddle 3 no longer writes
  (``relu6.threshold``: without it opt aborts with "No attributes called threshold found for relu6").
- :func:`add_xshape_outputs`: the ``XShape`` output of reshape2/transpose2/flatten/squeeze2/unsqueeze2
  (without it opt crashes with SIGSEGV in ``FlattenContiguousRangeOp::InferType``).
- :func:`scalar_fill_constants`: 0-d constants get shape ``[1]`` (Lite has no 0-d tensors).
- :func:`demote_empty_persistables`: empty persistable tensors no op reads (an RNN's dropout state)
  are not parameters for Lite (it aborts loading them); the parameter file is filtered to match.

The ProgramDesc protobuf classes come from the installed Paddle (``paddle.base.proto``).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any, Callable

from hwdeploy.errors import ModelFormatError
from hwdeploy.contract.model import TensorSpec

_lock = threading.Lock()
_pb2 = None

#: VarType.Type codes of a ProgramDesc -> numpy dtype names (and back).
PROTO_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64",
                20: "uint8", 21: "int8"}
DTYPE_CODES = {v: k for k, v in PROTO_DTYPES.items()}
DENSE_TENSOR, FEED_MINIBATCH, FETCH_LIST = 7, 9, 10


def framework_pb2():
    """Paddle's generated ``framework_pb2`` module (imports Paddle once, quietly)."""
    global _pb2
    with _lock:
        if _pb2 is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from paddle.base.proto import framework_pb2 as module
            _pb2 = module
        return _pb2


def load_program(path: Path):
    """Parse a ``.pdmodel`` file; :class:`ModelFormatError` if it is not a ProgramDesc."""
    pb2 = framework_pb2()
    try:
        program = pb2.ProgramDesc.FromString(Path(path).read_bytes())
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ModelFormatError(f"{path}: not a Paddle ProgramDesc ({exc})", path) from None
    if not program.blocks:
        raise ModelFormatError(f"{path}: ProgramDesc without blocks", path)
    return program


def op_types(program) -> list[str]:
    """Every op type of every block, in order."""
    return [op.type for block in program.blocks for op in block.ops]


def _slots(op, outputs: bool = False) -> dict[str, list[str]]:
    return {v.parameter: list(v.arguments) for v in (op.outputs if outputs else op.inputs)}


def io_specs(program) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (feed targets) and outputs (fetch sources) of a legacy program, in column order."""
    block = program.blocks[0]
    types = {}
    for var in block.vars:
        if var.type.type == DENSE_TENSOR:
            desc = var.type.dense_tensor.tensor if var.type.HasField("dense_tensor") else None
            if desc is not None:
                types[var.name] = (PROTO_DTYPES.get(desc.data_type, ""), tuple(desc.dims))
    feeds, fetches = [], []
    for op in block.ops:
        col = next((a.i for a in op.attrs if a.name == "col"), None)
        if op.type == "feed":
            feeds.append((col if col is not None else len(feeds), _slots(op, True)["Out"][0]))
        elif op.type == "fetch":
            fetches.append((col if col is not None else len(fetches), _slots(op)["X"][0]))

    def spec(name: str) -> TensorSpec:
        dtype, shape = types.get(name, ("", ()))
        return TensorSpec(name, shape, dtype)

    return [spec(n) for _, n in sorted(feeds)], [spec(n) for _, n in sorted(fetches)]


# ---------------------------------------------------------------------------- patches for Lite

#: Attributes Lite 2.13 reads unconditionally, with the defaults Paddle 2.x used to write.
DEFAULT_ATTRS: dict[str, list[tuple[str, str, Any]]] = {
    "relu6": [("threshold", "FLOAT", 6.0)],
}
#: Ops whose Lite definition expects the XShape output Paddle 3 no longer writes.
XSHAPE_OPS = ("flatten_contiguous_range", "flatten2", "reshape2", "transpose2", "squeeze2", "unsqueeze2")


def set_attr(op, name: str, kind: str, value: Any) -> None:
    """Add or replace attribute ``name`` of ``op``; ``kind`` is an AttrType name (INT, FLOATS, LONG...)."""
    pb2 = framework_pb2()
    for attr in op.attrs:
        if attr.name == name:
            op.attrs.remove(attr)
            break
    attr = op.attrs.add()
    attr.name = name
    attr.type = pb2.AttrType.Value(kind)
    field = {"INT": "i", "FLOAT": "f", "STRING": "s", "BOOLEAN": "b", "LONG": "l", "FLOAT64": "float64",
             "INTS": "ints", "FLOATS": "floats", "STRINGS": "strings", "BOOLEANS": "bools", "LONGS": "longs",
             "FLOAT64S": "float64s"}[kind]
    if kind.endswith("S"):  # repeated fields
        getattr(attr, field).extend(value)
    else:
        setattr(attr, field, value)


def add_default_attrs(program) -> int:
    """Give ops the attributes Lite reads but Paddle 3 omits (see :data:`DEFAULT_ATTRS`)."""
    changed = 0
    for block in program.blocks:
        for op in block.ops:
            have = {a.name for a in op.attrs}
            for name, kind, value in DEFAULT_ATTRS.get(op.type, ()):
                if name not in have:
                    set_attr(op, name, kind, value)
                    changed += 1
    return changed


def add_xshape_outputs(program) -> int:
    """Give reshape2/transpose2/flatten/(un)squeeze2 the ``XShape`` output Lite's InferType expects.

    XShape holds ``[0] + input dims``; nothing reads it at inference, but Lite dereferences it.
    """
    changed = 0
    for block in program.blocks:
        variables = {v.name: v for v in block.vars}
        for op in block.ops:
            if op.type not in XSHAPE_OPS:
                continue
            outputs = {v.parameter: v for v in op.outputs}
            if "XShape" in outputs and outputs["XShape"].arguments:
                continue
            source = _slots(op)["X"][0]
            name = source + ".xshape"
            if name not in variables:
                var = block.vars.add()
                var.name = name
                var.type.type = DENSE_TENSOR
                if source in variables and variables[source].type.HasField("dense_tensor"):
                    tensor = variables[source].type.dense_tensor.tensor
                    var.type.dense_tensor.tensor.data_type = tensor.data_type
                    var.type.dense_tensor.tensor.dims.extend([0] + list(tensor.dims))
                else:
                    var.type.dense_tensor.tensor.data_type = DTYPE_CODES["float32"]
                variables[name] = var
            slot = outputs.get("XShape") or op.outputs.add()
            slot.parameter = "XShape"
            del slot.arguments[:]
            slot.arguments.append(name)
            changed += 1
    return changed


def scalar_fill_constants(program) -> int:
    """Give 0-d ``fill_constant`` ops the shape ``[1]``: Paddle 3 writes scalars with an empty shape,
    which Lite's InferShape rejects ("no valid out_shape"), aborting at the first run."""
    changed = 0
    for block in program.blocks:
        for op in block.ops:
            if op.type != "fill_constant":
                continue
            inputs = _slots(op)
            if inputs.get("ShapeTensor") or inputs.get("ShapeTensorList"):
                continue
            shape = next((a for a in op.attrs if a.name == "shape"), None)
            if shape is None or not (list(shape.longs) or list(shape.ints)):
                set_attr(op, "shape", "LONGS", [1])
                changed += 1
    return changed


def demote_empty_persistables(program) -> int:
    """Make zero-element persistable tensors that no op reads ordinary temporaries.

    Paddle 3 saves RNN layers' dropout state as an empty persistable tensor (``eager_tmp_0``,
    written only by ``rnn.DropoutState``); Lite aborts loading it ("The input tensor has not
    initialized"). The converter drops such tensors from the parameter file to match.
    """
    changed = 0
    for block in program.blocks:
        read = {name for op in block.ops for slot in op.inputs for name in slot.arguments}
        for var in block.vars:
            if (var.persistable and var.type.type == DENSE_TENSOR and var.name not in read
                    and 0 in var.type.dense_tensor.tensor.dims):
                var.persistable = False
                changed += 1
    return changed


def persistable_names(program) -> list[str]:
    """Names of the tensors the parameter file holds, in file order (sorted, as save_combine writes them)."""
    return sorted({v.name for b in program.blocks for v in b.vars
                   if v.persistable and v.type.type == DENSE_TENSOR})


#: The patches, in the order they are applied.
LITE_PATCHES: dict[str, Callable[[Any], int]] = {
    "add_default_attrs": add_default_attrs,
    "add_xshape_outputs": add_xshape_outputs,
    "scalar_fill_constants": scalar_fill_constants,
    "demote_empty_persistables": demote_empty_persistables,
}


def patch_for_lite(program) -> dict[str, int]:
    """Apply every patch in :data:`LITE_PATCHES` in place; returns how many places each changed."""
    return {name: patch(program) for name, patch in LITE_PATCHES.items()}


def filter_params(source: Path, names: list[str], keep: list[str], dest: Path) -> None:
    """Write ``dest``: the combined parameter file ``source`` (tensors named ``names``, in file order)
    with only the tensors named in ``keep``, byte for byte."""
    from hwdeploy.sdk.paddle_format import scan_params

    records = scan_params(source)
    if len(records) != len(names):
        raise ModelFormatError(f"{source}: holds {len(records)} tensors but the program declares {len(names)}"
                               " persistable tensors", source)
    wanted = set(keep)
    data = Path(source).read_bytes()
    start = 0
    with open(dest, "wb") as out:
        for name, record in zip(names, records):
            end = record.offset + record.nbytes
            if name in wanted:
                out.write(data[start:end])
            start = end
