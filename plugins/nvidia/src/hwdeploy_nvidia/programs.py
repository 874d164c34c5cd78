"""Read what a (converted or optimized) program will execute, without importing Paddle.

The receipt's TensorRT evidence comes from here: how many TensorRT engine ops
a program holds and which ops stay outside TensorRT (run by Paddle's own CUDA
kernels). PIR ``.json`` programs go through hwdeploy's reader; legacy
``.pdmodel`` ProgramDescs through a minimal protobuf walk.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from hwdeploy.contract.model import TensorSpec
from hwdeploy.sdk.paddle_format import load_pir_program

ENGINE_OPS = ("pd_op.tensorrt_engine", "tensorrt_engine")
#: Feeding, fetching, parameters and IR plumbing: not computation.
_STRUCTURAL = ("pd_op.data", "pd_op.feed", "pd_op.fetch", "feed", "fetch")
_ENGINE_FILE = re.compile(r'[^"\s\\]*engine_\d+_\d+\.trt')


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def legacy_op_types(path: Path) -> list[str]:
    """Op types of every block of a ProgramDesc (ProgramDesc.blocks=1, BlockDesc.ops=4, OpDesc.type=3)."""
    types = []
    for number, _, block in _fields(Path(path).read_bytes()):
        if number != 1:
            continue
        for bnum, _, op in _fields(block):
            if bnum != 4:
                continue
            for onum, _, value in _fields(op):
                if onum == 3:
                    types.append(value.decode(errors="replace"))
    return types


_PROTO_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64",
                 20: "uint8", 21: "int8"}


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _tensor_desc(buf: bytes) -> tuple[str, tuple[int, ...]]:
    dtype, dims = "", []
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 0:
            dtype = _PROTO_DTYPES.get(value, "")
        elif number == 2 and wire == 0:
            dims.append(_signed(value))
        elif number == 2 and wire == 2:  # packed
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                dims.append(_signed(dim))
    return dtype, tuple(dims)


def legacy_inputs(path: Path) -> list[TensorSpec]:
    """Feed targets of a ProgramDesc in ``col`` order, with dtype and shape (``-1`` dynamic)."""
    data = Path(path).read_bytes()
    block = next((value for number, _, value in _fields(data) if number == 1), b"")
    var_types: dict[str, tuple[str, tuple[int, ...]]] = {}
    feeds: list[tuple[int, str]] = []
    for number, _, value in _fields(block):
        if number == 3:  # VarDesc: name=1, type=2 (VarType: dense/lod tensor desc=3 -> TensorDesc=1)
            name, desc = "", None
            for vnum, _, vval in _fields(value):
                if vnum == 1:
                    name = vval.decode(errors="replace")
                elif vnum == 2:
                    for tnum, _, tval in _fields(vval):
                        if tnum == 3:
                            desc = next((_tensor_desc(x) for n, _, x in _fields(tval) if n == 1), None)
            if desc is not None:
                var_types[name] = desc
        elif number == 4:  # OpDesc: outputs=2 (Var: parameter=1, arguments=2), type=3, attrs=4 (name=1, i=3)
            op_type, outputs, col = "", [], None
            for onum, _, oval in _fields(value):
                if onum == 3:
                    op_type = oval.decode(errors="replace")
                elif onum == 2:
                    outputs += [a.decode() for n, _, a in _fields(oval) if n == 2]
                elif onum == 4:
                    attr = {n: v for n, _, v in _fields(oval)}
                    if attr.get(1) == b"col":
                        col = attr.get(3)
            if op_type == "feed" and outputs:
                feeds.append((col if col is not None else len(feeds), outputs[0]))
    specs = []
    for _, name in sorted(feeds):
        dtype, shape = var_types.get(name, ("", ()))
        specs.append(TensorSpec(name, shape, dtype))
    return specs


def op_counts(path: Path) -> Counter:
    path = Path(path)
    if path.suffix == ".pdmodel":
        return Counter(legacy_op_types(path))
    return Counter(load_pir_program(path).op_types())


def is_structural(op: str) -> bool:
    return op in _STRUCTURAL or op.startswith("builtin.")


def trt_summary(path: Path) -> dict:
    """``{"engines": n, "outside": {op: count}, "ops": total compute ops}`` for a program file."""
    counts = op_counts(path)
    engines = sum(counts[name] for name in ENGINE_OPS)
    outside = {op: n for op, n in sorted(counts.items()) if op not in ENGINE_OPS and not is_structural(op)}
    return {"engines": engines, "outside": outside, "source": str(path)}


def engine_files(program: Path) -> list[str]:
    """Serialized engine files a PIR-TensorRT program refers to (``engine_<hash>_<n>.trt``)."""
    return sorted(set(_ENGINE_FILE.findall(Path(program).read_text(errors="replace"))))
