"""Validate a legacy ``.pdmodel`` ProgramDesc before Paddle sees it, with a real protobuf parser.

Paddle's C++ side trusts a ProgramDesc: a var dropped, an op input naming an undeclared var, an attribute whose
value does not match its declared type, or a ``sub_block`` that points nowhere make
``paddle.inference.create_predictor`` die by SIGSEGV (``VarDesc::Flush``, ``OpDesc::Flush``,
``ONEDNNPlacementPass::IsSupport``) in the caller's process. :func:`validate_legacy_program` proves the
structural facts those crashes need before any Paddle call, and raises
:class:`~hwdeploy.errors.ModelFormatError` naming the file and what is wrong.

The schema is Paddle's own ``framework.proto``, compiled by the ``protobuf`` package: the serialized
``FileDescriptorProto`` is read from the *installed* Paddle wheel's generated ``paddle/base/proto/framework_pb2.py``
(its source, parsed with :mod:`ast`; the module is never imported, because importing it imports Paddle) and
built in a private :class:`~google.protobuf.descriptor_pool.DescriptorPool`. So the schema is exactly the one
of the runtime that will load the file, with no copy to keep in step, and hwdeploy's pool never collides with
Paddle's default pool. Without Paddle (or protobuf) installed there is no runtime to protect:
:func:`schema_available` is False and callers fall back to the light wire-level reader in
:mod:`hwdeploy.sdk.paddle_format`.
"""

from __future__ import annotations

import ast
import math
import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwdeploy.errors import ModelFormatError

__all__ = ["LegacyProgram", "program_class", "read_program", "schema_available", "validate_legacy_program"]

_PACKAGE = "paddle.framework.proto"
_lock = threading.Lock()
_classes: dict[str, Any] = {}
_schema_error: str | None = None

# VarType.Type codes (framework.proto)
DENSE_TENSOR, SELECTED_ROWS, FEED_MINIBATCH, FETCH_LIST, DENSE_TENSOR_ARRAY = 7, 8, 9, 10, 13
_TENSOR_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64",
                  20: "uint8", 21: "int8", 22: "bfloat16", 23: "complex64", 24: "complex128"}

# AttrType -> the OpDesc.Attr field that holds its value (framework.proto)
_ATTR_FIELDS = {0: "i", 1: "f", 2: "s", 3: "ints", 4: "floats", 5: "strings", 6: "b", 7: "bools", 8: "block_idx",
                9: "l", 10: "blocks_idx", 11: "longs", 12: "float64s", 13: "var_name", 14: "vars_name",
                15: "float64", 16: "scalar", 17: "scalars"}
_ATTR_NAMES = {0: "INT", 1: "FLOAT", 2: "STRING", 3: "INTS", 4: "FLOATS", 5: "STRINGS", 6: "BOOLEAN",
               7: "BOOLEANS", 8: "BLOCK", 9: "LONG", 10: "BLOCKS", 11: "LONGS", 12: "FLOAT64S", 13: "VAR",
               14: "VARS", 15: "FLOAT64", 16: "SCALAR", 17: "SCALARS"}
# Scalar (non-repeated) value fields must be present for their type; repeated ones may be empty.
_SCALAR_ATTRS = {0, 1, 2, 6, 8, 9, 13, 15, 16}


def _framework_pb2_source() -> Path | None:
    spec = importlib.util.find_spec("paddle")  # a top-level spec: finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "base" / "proto" / "framework_pb2.py"
        if path.is_file():
            return path
    return None


def _serialized_descriptor(source: Path) -> bytes:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile" and node.args:
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise LookupError(f"{source}: no AddSerializedFile(b'...') call")


def program_class(name: str = "ProgramDesc"):
    """The protobuf message class ``paddle.framework.proto.NAME`` compiled from the installed Paddle's schema.

    Raises :class:`LookupError` when Paddle or protobuf is not installed (see :func:`schema_available`).
    """
    global _schema_error
    with _lock:
        if name in _classes:
            return _classes[name]
        if _schema_error is not None:
            raise LookupError(_schema_error)
        try:
            from google.protobuf import descriptor_pool, message_factory

            source = _framework_pb2_source()
            if source is None:
                raise LookupError("Paddle is not installed (no paddle/base/proto/framework_pb2.py)")
            pool = descriptor_pool.DescriptorPool()
            pool.AddSerializedFile(_serialized_descriptor(source))
            for message in ("ProgramDesc", "BlockDesc", "OpDesc", "VarDesc", "VarType"):
                _classes[message] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{message}"))
        except (ImportError, LookupError, OSError, SyntaxError, ValueError, TypeError) as exc:
            _schema_error = f"Paddle's framework.proto schema is not available: {exc}"
            raise LookupError(_schema_error) from None
        return _classes[name]


def schema_available() -> bool:
    try:
        program_class()
        return True
    except LookupError:
        return False


@dataclass
class LegacyProgram:
    """What validation learnt about a legacy program (used by callers that need its I/O or parameters)."""

    message: Any = field(repr=False)
    feeds: list[str]  # in ``col`` order
    fetches: list[str]  # in ``col`` order
    parameters: list[tuple[str, str, tuple[int, ...]]]  # persistable vars of block 0, sorted by name


def read_program(path: Path, data: bytes | None = None):
    """The parsed ``ProgramDesc`` message of ``path``; a file protobuf cannot parse is a ModelFormatError."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    if data is None:
        from hwdeploy.sdk.paddle_format import read_model_file

        data = read_model_file(path)
    try:
        message = program_class().FromString(data)
    except DecodeError as exc:
        raise ModelFormatError(f"{path}: cannot parse the program: not a valid Paddle ProgramDesc (protobuf: {exc})",
                               path) from None
    except RecursionError:
        raise ModelFormatError(f"{path}: not a valid Paddle ProgramDesc (messages nested too deeply)", path) from None
    missing = message.FindInitializationErrors()  # proto2 required fields (VarDesc.type, OpDesc.type, ...)
    if missing:
        raise ModelFormatError(f"{path}: invalid Paddle ProgramDesc: required field(s) missing:"
                               f" {', '.join(missing[:5])}", path)
    return message


def validate_legacy_program(program: Path, params: Path | None = None, records: list | None = None) -> LegacyProgram:
    """Check a legacy ProgramDesc (and its parameter file) so that Paddle never sees a dangling reference.

    - every block's ``idx`` is its position and its ``parent_idx`` an earlier block (block 0: ``-1``);
    - every var has a name and a type, and a dense tensor var a readable data type and dims >= -1;
    - every op input/output names a var declared in its block or an ancestor block;
    - every attribute's value sits in the field of its declared type (nothing else set), a ``BLOCK``/``BLOCKS``
      attribute (``sub_block``) names an existing block other than its own, ``VAR``/``VARS`` declared vars;
    - block 0 has at least one ``feed`` and one ``fetch`` op, their ``col`` attributes are 0..n-1, feed targets
      and fetch sources are declared vars;
    - the persistable vars (not feed/fetch) match the parameter file: count, then dtype and shape per tensor
      in name order (how ``save_combine`` writes them). ``records`` are :func:`paddle_format.scan_params`'s.

    Raises :class:`~hwdeploy.errors.ModelFormatError` naming the file and what is wrong.
    """
    program = Path(program)
    message = read_program(program)

    def bad(what: str) -> ModelFormatError:
        return ModelFormatError(f"{program}: invalid Paddle ProgramDesc: {what}", program)

    blocks = list(message.blocks)
    if not blocks:
        raise bad("no blocks")
    declared: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        if block.idx != index:
            raise bad(f"block #{index} says it is block {block.idx}")
        if index == 0 and block.parent_idx != -1:
            raise bad(f"block 0 has parent {block.parent_idx} (must be -1)")
        if index > 0 and not 0 <= block.parent_idx < index:
            raise bad(f"block {index} has parent {block.parent_idx}: no such earlier block")
        names: dict[str, Any] = {}
        for var in block.vars:
            if not var.name:
                raise bad(f"block {index} declares a var without a name")
            _check_var(var, index, bad)
            names[var.name] = var
        declared.append(names)

    def lookup(block_index: int, name: str):
        while block_index >= 0:
            if name in declared[block_index]:
                return declared[block_index][name]
            block_index = blocks[block_index].parent_idx if block_index > 0 else -1
        return None

    for index, block in enumerate(blocks):
        for number, op in enumerate(block.ops):
            where = f"block {index} op #{number} ({op.type or '<no type>'})"
            if not op.type:
                raise bad(f"{where} has no type")
            for kind, slots in (("input", op.inputs), ("output", op.outputs)):
                for slot in slots:
                    for argument in slot.arguments:
                        if lookup(index, argument) is None:
                            raise bad(f"{where} {kind} {slot.parameter!r} names {argument!r}, which no block in scope"
                                      f" declares")
            for attr in op.attrs:
                _check_attr(attr, where, index, len(blocks), lambda name: lookup(index, name) is not None, bad)

    feeds, fetches = _feed_fetch(blocks[0], lookup, bad)
    _check_dataflow(blocks, bad)
    parameters = sorted(
        (var.name, _TENSOR_DTYPES.get(var.type.dense_tensor.tensor.data_type, ""),
         tuple(var.type.dense_tensor.tensor.dims))
        for var in blocks[0].vars
        if var.persistable and var.type.type not in (FEED_MINIBATCH, FETCH_LIST))
    if records is None and params is not None:
        from hwdeploy.sdk.paddle_format import scan_params

        records = scan_params(params)
    if records is not None:
        where = Path(params) if params is not None else program
        if len(records) != len(parameters):
            raise ModelFormatError(f"{where}: holds {len(records)} tensors but {program.name} declares"
                                   f" {len(parameters)} persistable vars (mismatched or truncated files)", where)
        for (name, dtype, shape), rec in zip(parameters, records):
            if dtype and (not _same_dtype(dtype, rec.dtype) or not _same_shape(shape, rec.shape)):
                raise ModelFormatError(f"{where}: parameter {name} is {rec.dtype}{list(rec.shape)} in the file but"
                                       f" {dtype}{list(shape)} in {program.name}", where)
    return LegacyProgram(message, feeds, fetches, parameters)


def _same_dtype(declared: str, stored: str) -> bool:
    """Equal dtypes; or int8 weights of a float var (Paddle's quantizer stores them so; each tensor in the file
    carries its own dtype and size, which the scan has already checked against the file)."""
    return declared == stored or (stored == "int8" and declared in ("float32", "float64"))


def _same_shape(declared, stored) -> bool:
    """Equal shapes; or the same number of elements (Paddle's quantizer declares its scales [16] and stores them
    [1, 16], or [1] and stores it 0-d: the same bytes, and the file's own header is what Paddle reads)."""
    declared, stored = tuple(declared), tuple(stored)
    return declared == stored or (all(d >= 0 for d in declared) and math.prod(declared) == math.prod(stored))


def _check_var(var, block_index: int, bad) -> None:
    vtype = var.type
    if vtype.type in (DENSE_TENSOR, SELECTED_ROWS, DENSE_TENSOR_ARRAY):
        holder = {DENSE_TENSOR: "dense_tensor", SELECTED_ROWS: "selected_rows",
                  DENSE_TENSOR_ARRAY: "tensor_array"}[vtype.type]
        if not vtype.HasField(holder):
            raise bad(f"block {block_index} var {var.name!r} is a {holder} without its tensor description")
        tensor = getattr(vtype, holder)
        tensor = tensor if holder == "selected_rows" else tensor.tensor
        if tensor.data_type not in _TENSOR_DTYPES:
            raise bad(f"block {block_index} var {var.name!r} has data type code {tensor.data_type}, which this check"
                      f" does not know")
        if any(dim < -1 for dim in tensor.dims):
            raise bad(f"block {block_index} var {var.name!r} has dims {list(tensor.dims)}")


def _check_attr(attr, where: str, block_index: int, block_count: int, is_declared, bad) -> None:
    kind = _ATTR_FIELDS.get(attr.type)
    if kind is None:
        raise bad(f"{where} attribute {attr.name!r} has unknown type code {attr.type}")
    type_name = _ATTR_NAMES[attr.type]
    others = [f.name for f, _ in attr.ListFields() if f.name not in ("name", "type", kind)]
    if others:
        raise bad(f"{where} attribute {attr.name!r} is declared {type_name} but sets {', '.join(others)}")
    if attr.type in _SCALAR_ATTRS and not attr.HasField(kind):
        raise bad(f"{where} attribute {attr.name!r} is declared {type_name} but has no {kind} value")
    if attr.type == 8 or attr.type == 10:  # BLOCK / BLOCKS: sub_block, sub_blocks
        targets = [attr.block_idx] if attr.type == 8 else list(attr.blocks_idx)
        for target in targets:
            if not 0 <= target < block_count:
                raise bad(f"{where} attribute {attr.name!r} references block {target}; the program has"
                          f" {block_count} block(s)")
            if target == block_index:
                raise bad(f"{where} attribute {attr.name!r} references its own block {target}")
    elif attr.type == 13 and not is_declared(attr.var_name):
        raise bad(f"{where} attribute {attr.name!r} names var {attr.var_name!r}, which is not declared")
    elif attr.type == 14:
        for name in attr.vars_name:
            if not is_declared(name):
                raise bad(f"{where} attribute {attr.name!r} names var {name!r}, which is not declared")


def _feed_fetch(block, lookup, bad) -> tuple[list[str], list[str]]:
    found: dict[str, list[tuple[int, str]]] = {"feed": [], "fetch": []}
    for op in block.ops:
        if op.type not in found:
            continue
        slot = "Out" if op.type == "feed" else "X"
        arguments = [a for v in (op.outputs if op.type == "feed" else op.inputs) if v.parameter == slot
                     for a in v.arguments]
        if len(arguments) != 1:
            raise bad(f"a {op.type} op has {len(arguments)} {slot!r} arguments (expected 1)")
        cols = [a.i for a in op.attrs if a.name == "col"]
        if len(cols) != 1:
            raise bad(f"the {op.type} op of {arguments[0]!r} has no 'col' attribute")
        target = lookup(0, arguments[0])
        if target is None or target.type.type in (FEED_MINIBATCH, FETCH_LIST):
            raise bad(f"the {op.type} op's target {arguments[0]!r} is not a declared tensor var")
        found[op.type].append((cols[0], arguments[0]))
    if not found["feed"]:
        raise bad("no feed op: the program has no inputs")
    if not found["fetch"]:
        raise bad("no fetch op: the program has no outputs (run() would return nothing)")
    for kind, entries in found.items():
        cols = sorted(col for col, _ in entries)
        if cols != list(range(len(entries))):
            raise bad(f"{kind} ops have col attributes {cols} (expected 0..{len(entries) - 1})")
    return [name for _, name in sorted(found["feed"])], [name for _, name in sorted(found["fetch"])]


def _check_dataflow(blocks: list, bad) -> None:
    """In block 0, every op input is a parameter (persistable), a fed var, or written by an earlier op: a
    removed op leaves its readers with a tensor nobody fills (Paddle then reads uninitialised memory)."""
    written_in: dict[int, set[str]] = {}
    for index, block in enumerate(blocks):
        written_in[index] = {a for op in block.ops for v in op.outputs for a in v.arguments}
    ready = {var.name for var in blocks[0].vars if var.persistable}
    for number, op in enumerate(blocks[0].ops):
        for slot in op.inputs:
            for argument in slot.arguments:
                if argument not in ready:
                    raise bad(f"block 0 op #{number} ({op.type}) input {slot.parameter!r} reads {argument!r}, which"
                              f" no earlier op writes and which is neither fed nor a parameter")
        ready.update(a for v in op.outputs for a in v.arguments)
        for attr in op.attrs:  # a control-flow op's sub-blocks write vars the parent reads afterwards
            if attr.type == 8:
                ready.update(written_in.get(attr.block_idx, ()))
            elif attr.type == 10:
                for target in attr.blocks_idx:
                    ready.update(written_in.get(target, ()))
