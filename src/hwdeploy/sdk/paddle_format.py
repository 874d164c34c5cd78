"""Read Paddle model files without importing Paddle.

Used to validate a model before any Paddle call sees it (a truncated file gets
a typed error naming the file), and by converters that need the program and the
weights (Paddle.js, Paddle Lite) without a Paddle runtime.

Formats:
- ``.pdiparams`` (save_combine): for each tensor, ``u32 version=0``, ``u64 lod_level``
  and that many ``(u64 nbytes, bytes)`` levels, then ``u32 version=0``, ``i32 desc_size``,
  a ``TensorDesc`` protobuf (field 1 data type, field 2 dims) and the raw data.
- PIR ``.json``: ``{"base_code": {"magic": "pir", ...}, "program": {"regions": [...]}}``.
- legacy ``.pdmodel``: a ``ProgramDesc`` protobuf message (read with :func:`proto_fields`; op types
  and feed targets only).

Every reader raises :class:`~hwdeploy.errors.ModelFormatError` on a truncated or corrupt file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hwdeploy.errors import ModelError, ModelFormatError, ModelNotFoundError

# paddle/phi/core/framework/framework.proto VarType.Type -> numpy dtype
PADDLE_DTYPES: dict[int, str] = {
    0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32",
    6: "float64", 20: "uint8", 21: "int8", 22: "bfloat16", 23: "complex64", 24: "complex128",
}
# PIR type tags -> numpy dtype
PIR_DTYPES: dict[str, str] = {
    "0.t_f16": "float16", "0.t_f32": "float32", "0.t_f64": "float64", "0.t_bf16": "bfloat16",
    "0.t_i8": "int8", "0.t_ui8": "uint8", "0.t_i16": "int16", "0.t_i32": "int32",
    "0.t_i64": "int64", "0.t_bool": "bool", "0.t_c64": "complex64", "0.t_c128": "complex128",
}


@dataclass(frozen=True)
class TensorRecord:
    dtype: str
    shape: tuple[int, ...]
    offset: int  # byte offset of the data in the file
    nbytes: int


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the protobuf varint at ``buf[pos]``; return ``(value, position after it)``.

    Raises :class:`~hwdeploy.errors.ModelFormatError` when the buffer ends inside
    the varint or the varint is longer than 64 bits (a corrupt or truncated file).
    """
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelFormatError(f"truncated varint at offset {pos} (buffer has {len(buf)} bytes)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelFormatError(f"varint longer than 64 bits before offset {pos}")


def signed64(value: int) -> int:
    """A varint read as protobuf ``int64`` (two's complement: ``-1`` is stored as 2**64 - 1)."""
    return value - (1 << 64) if value >= 1 << 63 else value


_FIXED_SIZES = {1: 8, 5: 4}


def proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of each field of one protobuf message, in order.

    Varints come back as ``int``, length-delimited, 64- and 32-bit fields as ``bytes``.
    Raises :class:`~hwdeploy.errors.ModelFormatError` when a field runs past the end
    of ``buf`` or uses a wire type protobuf 3 does not write (groups).
    """
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2 or wire in _FIXED_SIZES:
            if wire == 2:
                size, pos = varint(buf, pos)
            else:
                size = _FIXED_SIZES[wire]
            if pos + size > len(buf):
                raise ModelFormatError(f"truncated protobuf field {number} at offset {pos}: needs {size} bytes,"
                                       f" {len(buf) - pos} left")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ModelFormatError(f"unexpected protobuf wire type {wire} (field {number}) before offset {pos}")
        yield number, wire, value


def tensor_desc(buf: bytes) -> tuple[int, list[int]]:
    """Decode a ``TensorDesc`` protobuf message: ``(data type code, dims)`` (``-1`` for a dynamic dim).

    The code indexes :data:`PADDLE_DTYPES`.
    """
    dtype, dims = None, []
    for number, wire, value in proto_fields(buf):
        if number == 1 and wire == 0:
            dtype = value
        elif number == 2 and wire == 0:
            dims.append(signed64(value))
        elif number == 2 and wire == 2:  # packed dims
            pos = 0
            while pos < len(value):
                dim, pos = varint(value, pos)
                dims.append(signed64(dim))
    if dtype is None:
        raise ModelFormatError("TensorDesc without data_type")
    return dtype, dims


def read_model_file(path: Path) -> bytes:
    """``path``'s bytes; a path that is a directory, too long, unreadable... is a typed :class:`ModelError`."""
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise ModelFormatError(f"{path}: is a directory, not a model file", path) from None
    except FileNotFoundError:
        raise ModelNotFoundError(f"model file not found: {path}", path) from None
    except OSError as exc:
        raise ModelError(f"{str(path)[:200]}: cannot read the model file ({exc.strerror or exc})", path) from None


def scan_params(path: Path) -> list[TensorRecord]:
    """Walk a combined ``.pdiparams`` file; raise ModelFormatError if it is not exactly one."""
    path = Path(path)
    data = read_model_file(path)
    records: list[TensorRecord] = []
    pos = 0

    def need(n: int, what: str) -> None:
        if pos + n > len(data):
            raise ModelFormatError(
                f"{path}: truncated parameter file (tensor #{len(records)}: {what} needs {n} bytes at offset {pos},"
                f" file has {len(data)})", path)

    while pos < len(data):
        need(12, "header")
        version, lod_level = struct.unpack_from("<IQ", data, pos)
        if version != 0:
            raise ModelFormatError(f"{path}: not a Paddle parameter file (tensor #{len(records)} at offset {pos}"
                                   f" has version {version}, expected 0)", path)
        pos += 12
        if lod_level > 16:
            raise ModelFormatError(f"{path}: corrupt parameter file (lod level {lod_level} at tensor #{len(records)})", path)
        for _ in range(lod_level):
            need(8, "lod size")
            (size,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            need(size, "lod data")
            pos += size
        need(8, "tensor header")
        tversion, desc_size = struct.unpack_from("<Ii", data, pos)
        pos += 8
        if tversion != 0 or not 0 < desc_size < 1 << 16:
            raise ModelFormatError(f"{path}: corrupt parameter file (bad tensor header at tensor #{len(records)})", path)
        need(desc_size, "tensor desc")
        try:
            dtype_code, dims = tensor_desc(data[pos:pos + desc_size])
        except ValueError as exc:
            raise ModelFormatError(f"{path}: corrupt tensor description at tensor #{len(records)}: {exc}", path) from None
        pos += desc_size
        if dtype_code not in PADDLE_DTYPES or any(d < 0 for d in dims):
            raise ModelFormatError(f"{path}: corrupt tensor description at tensor #{len(records)}"
                                   f" (dtype code {dtype_code}, dims {dims})", path)
        dtype = PADDLE_DTYPES[dtype_code]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        # Python ints (no int64 wrap-around), checked against the file size at every factor: a dims product
        # like [7, 2635249153387078801] or [2**62, 2] is refused before anything is allocated.
        nbytes = itemsize
        for dim in dims:
            nbytes *= dim
            if nbytes > len(data):
                raise ModelFormatError(f"{path}: corrupt parameter file (tensor #{len(records)} at offset {pos}: dims"
                                       f" {dims} of {dtype} need more than the whole file's {len(data)} bytes)", path)
        need(nbytes, "tensor data")  # fits in the file, not in what is left of it: a truncated file
        records.append(TensorRecord(dtype, tuple(dims), pos, nbytes))
        pos += nbytes  # every pass advances by >= 21 bytes (headers + a non-empty desc) and nbytes >= 0
    return records


def read_params(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Load every tensor of a combined parameter file, named in file order by ``names``."""
    records = scan_params(path)
    if len(records) != len(names):
        raise ModelFormatError(f"{path}: holds {len(records)} tensors but the program has {len(names)} parameters", path)
    raw = Path(path).read_bytes()
    out = {}
    for name, rec in zip(names, records):
        if rec.dtype == "bfloat16":
            bits = np.frombuffer(raw, "<u2", rec.nbytes // 2, rec.offset).astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(rec.shape)
        else:
            out[name] = np.frombuffer(raw, rec.dtype, rec.nbytes // np.dtype(rec.dtype).itemsize, rec.offset).reshape(rec.shape).copy()
    return out


# ---------------------------------------------------------------- PIR programs


def _attr_value(node: Any) -> Any:
    """Decode a typed PIR attribute node ``{"#": "0.a_str", "D": ...}``."""
    if isinstance(node, dict) and "D" in node:
        return _attr_value(node["D"])
    if isinstance(node, list):
        return [_attr_value(x) for x in node]
    return node


def _tensor_type(value: dict) -> tuple[str, tuple[int, ...]] | None:
    tt = value.get("TT") if isinstance(value, dict) else None
    if not tt or tt.get("#") != "0.t_dtensor":
        return None
    dtype_node, shape = tt["D"][0], tt["D"][1]
    return PIR_DTYPES.get(dtype_node.get("#"), dtype_node.get("#")), tuple(shape)


@dataclass
class PirOp:
    type: str  # "pd_op.conv2d" style, dialect prefix expanded
    attrs: dict[str, Any]
    inputs: list[int | None]
    outputs: list[int | None]
    output_types: list[tuple[str, tuple[int, ...]] | None]
    raw: dict = field(repr=False, default_factory=dict)


_DIALECTS = {"0": "builtin", "1": "pd_op", "2": "cf", "3": "custom_op"}


@dataclass
class PirProgram:
    ops: list[PirOp]
    parameters: list[tuple[str, str, tuple[int, ...]]]  # (name, dtype, shape) in program order
    inputs: list[tuple[str, str, tuple[int, ...]]]  # data ops: (name, dtype, shape)
    outputs: list[str]  # fetch names

    def op_types(self) -> list[str]:
        return [op.type for op in self.ops]


def load_pir_program(path: Path) -> PirProgram:
    path = Path(path)
    try:
        doc = json.loads(read_model_file(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a valid Paddle PIR program (JSON error: {exc})", path) from None
    except RecursionError:
        raise ModelFormatError(f"{path}: not a valid Paddle PIR program (JSON nested too deeply)", path) from None
    if not isinstance(doc, dict) or doc.get("base_code", {}).get("magic") != "pir" or "program" not in doc:
        raise ModelFormatError(f"{path}: not a Paddle PIR program (no base_code.magic == 'pir')", path)
    try:
        block = doc["program"]["regions"][0]["blocks"][0]
        return _parse_block(block)
    except RecursionError:
        raise ModelFormatError(f"{path}: malformed Paddle PIR program (nested too deeply)", path) from None
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:  # a node of the wrong JSON type
        raise ModelFormatError(f"{path}: malformed Paddle PIR program ({type(exc).__name__}: {exc})", path) from None


def _parse_block(block: dict) -> PirProgram:
    ops, params, inputs, outputs = [], [], [], []
    for raw in block["ops"]:
        tag = raw["#"]
        outs = raw.get("O", [])
        outs = outs if isinstance(outs, list) else [outs]
        if tag == "p":  # parameter: "A": [?, ?, ?, name]
            name = raw["A"][3]
            if not isinstance(name, str):  # a mutated file: sorting parameter names would raise a bare TypeError
                raise TypeError(f"parameter name {name!r:.60} is not a string")
            ttype = _tensor_type(outs[0])
            # "OA" = [persistable, stop_gradient, trainable]; non-persistable ones (an RNN's
            # dropout state) are not in the .pdiparams file.
            if (raw.get("OA") or [1])[0]:
                params.append((name, ttype[0], ttype[1]))
            ops.append(PirOp("builtin.parameter", {"parameter_name": name}, [], [outs[0].get("%")], [ttype], raw))
            continue
        dialect, _, name = tag.partition(".")
        op_type = f"{_DIALECTS.get(dialect, dialect)}.{name}" if name else tag
        attrs = {a["N"]: _attr_value(a["AT"]) for a in raw.get("A", []) if isinstance(a, dict) and "N" in a}
        op = PirOp(op_type, attrs, [i.get("%") if isinstance(i, dict) else None for i in raw.get("I", [])],
                   [o.get("%") if isinstance(o, dict) else None for o in outs],
                   [_tensor_type(o) for o in outs], raw)
        ops.append(op)
        if op_type == "pd_op.data":
            dtype, shape = op.output_types[0] or (attrs.get("dtype"), tuple(attrs.get("shape", ())))
            inputs.append((attrs["name"], dtype, tuple(shape)))
        elif op_type == "pd_op.fetch":
            outputs.append(attrs.get("name", f"fetch_{len(outputs)}"))
    return PirProgram(ops, params, inputs, outputs)


def iter_sub_blocks(op: PirOp) -> Iterator[dict]:
    for region in op.raw.get("regions", []) or []:
        yield from region.get("blocks", [])


def iter_all_ops(ops: list[PirOp]) -> Iterator[PirOp]:
    """``ops`` and, depth first, the ops of their sub-blocks (``pd_op.if`` branches, ``pd_op.while`` bodies)."""
    for op in ops:
        yield op
        for block in iter_sub_blocks(op):
            yield from iter_all_ops(_parse_block(block).ops)


# ---------------------------------------------------------------- legacy ProgramDesc (.pdmodel)
# paddle/fluid/framework/framework.proto: ProgramDesc.blocks = 1; BlockDesc.vars = 3, ops = 4;
# OpDesc.outputs = 2 (Var: parameter = 1, arguments = 2), type = 3, attrs = 4 (name = 1, i = 3);
# VarDesc.name = 1, type = 2 (VarType.dense_tensor = 3 -> DenseTensorDesc.tensor = 1).


def _read_legacy(path: Path, read):
    path = Path(path)
    data = read_model_file(path)
    try:
        return read(data)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: not a readable Paddle ProgramDesc ({exc})", path) from None
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path}: not a readable Paddle ProgramDesc (bad name: {exc})", path) from None


def legacy_op_types(path: Path) -> list[str]:
    """Op types of every block of a legacy ``.pdmodel`` ProgramDesc, in program order.

    Raises :class:`~hwdeploy.errors.ModelFormatError` naming the file when it is truncated or corrupt.
    """
    def read(data: bytes) -> list[str]:
        types = []
        for number, _, block in proto_fields(data):
            if number != 1:
                continue
            for bnum, _, op in proto_fields(block):
                if bnum != 4:
                    continue
                types += [value.decode(errors="replace") for onum, _, value in proto_fields(op) if onum == 3]
        return types

    return _read_legacy(path, read)


def legacy_inputs(path: Path) -> list:
    """Feed targets of a legacy ``.pdmodel`` ProgramDesc in ``col`` order, as
    :class:`~hwdeploy.TensorSpec` (dtype and shape, ``-1`` for a dynamic dim).

    Raises :class:`~hwdeploy.errors.ModelFormatError` naming the file when it is truncated or corrupt.
    """
    from hwdeploy.contract.records import TensorSpec

    def read(data: bytes) -> list:
        blocks = [value for number, _, value in proto_fields(data) if number == 1]  # reads the whole file
        block = blocks[0] if blocks else b""
        var_types: dict[str, tuple[str, tuple[int, ...]]] = {}
        feeds: list[tuple[int, str]] = []
        for number, _, value in proto_fields(block):
            if number == 3:
                name, desc = "", None
                for vnum, _, vval in proto_fields(value):
                    if vnum == 1:
                        name = vval.decode()
                    elif vnum == 2:
                        for tnum, _, tval in proto_fields(vval):
                            if tnum == 3:
                                desc = next((tensor_desc(x) for n, _, x in proto_fields(tval) if n == 1), None)
                if desc is not None:
                    var_types[name] = (PADDLE_DTYPES.get(desc[0], ""), tuple(desc[1]))
            elif number == 4:
                op_type, outputs, col = "", [], None
                for onum, _, oval in proto_fields(value):
                    if onum == 3:
                        op_type = oval.decode()
                    elif onum == 2:
                        outputs += [a.decode() for n, _, a in proto_fields(oval) if n == 2]
                    elif onum == 4:
                        attr = {n: v for n, _, v in proto_fields(oval)}
                        if attr.get(1) == b"col":
                            col = attr.get(3)
                if op_type == "feed" and outputs:
                    feeds.append((col if col is not None else len(feeds), outputs[0]))
        specs = []
        for _, name in sorted(feeds):
            dtype, shape = var_types.get(name, ("", ()))
            specs.append(TensorSpec(name, shape, dtype))
        return specs

    return _read_legacy(path, read)
