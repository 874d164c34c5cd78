"""Mutant generators for the fault suite (issue 12): damaged legacy ProgramDescs, PIR programs, parameter files.

Each generator takes the original files' bytes and a ``random.Random`` and returns ``(program_bytes,
params_bytes, description)``. Legacy mutants are built with Paddle's own schema (compiled by
:mod:`hwdeploy.sdk.legacy_program`), so a structural mutant is a well-formed protobuf with a wrong fact inside.
"""

from __future__ import annotations

import json
import random
from typing import Callable

from hwdeploy.sdk.legacy_program import program_class

Mutant = tuple[bytes, bytes, str]


def _parse(program: bytes):
    return program_class().FromString(program)


def legacy_drop_var(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    message = _parse(program)
    block = message.blocks[0]
    index = rng.randrange(len(block.vars))
    name = block.vars[index].name
    del block.vars[index]
    return message.SerializeToString(), params, f"legacy: var {name!r} dropped"


def legacy_undeclared_input(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    message = _parse(program)
    ops = [op for op in message.blocks[0].ops if any(v.arguments for v in op.inputs)]
    op = rng.choice(ops)
    slot = rng.choice([v for v in op.inputs if v.arguments])
    position = rng.randrange(len(slot.arguments))
    slot.arguments[position] = f"undeclared_{rng.randrange(1000)}"
    return message.SerializeToString(), params, f"legacy: {op.type} input {slot.parameter} renamed to an undeclared var"


def legacy_undeclared_output(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    message = _parse(program)
    ops = [op for op in message.blocks[0].ops if any(v.arguments for v in op.outputs)]
    op = rng.choice(ops)
    slot = rng.choice([v for v in op.outputs if v.arguments])
    slot.arguments[0] = f"ghost_{rng.randrange(1000)}"
    return message.SerializeToString(), params, f"legacy: {op.type} output {slot.parameter} renamed to an undeclared var"


def legacy_mutate_attr(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    message = _parse(program)
    ops = [op for op in message.blocks[0].ops if op.attrs]
    op = rng.choice(ops)
    attr = rng.choice(list(op.attrs))
    how = rng.choice(["type", "extra_field", "clear"])
    if how == "type":
        attr.type = rng.choice([t for t in range(18) if t != attr.type])
    elif how == "extra_field":
        if attr.type == 0:
            attr.f = 1.5
        else:
            attr.i = rng.choice([-1, 0, 7, 2**31 - 1])
    else:
        for name in ("i", "f", "s", "b", "l", "block_idx", "float64", "var_name"):
            attr.ClearField(name)
        for name in ("ints", "floats", "strings", "bools", "longs", "float64s", "blocks_idx", "vars_name"):
            attr.ClearField(name)
    return message.SerializeToString(), params, f"legacy: {op.type} attribute {attr.name!r} mutated ({how})"


def legacy_dangling_sub_block(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    message = _parse(program)
    op = rng.choice(list(message.blocks[0].ops))
    attr = op.attrs.add()
    attr.name, attr.type = "sub_block", 8
    attr.block_idx = rng.choice([len(message.blocks), len(message.blocks) + 3, -1, 0])
    return message.SerializeToString(), params, f"legacy: {op.type} sub_block -> block {attr.block_idx}"


def legacy_drop_fetch(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    message = _parse(program)
    block = message.blocks[0]
    kept = [op for op in block.ops if op.type != "fetch"]
    del block.ops[:]
    block.ops.extend(kept)
    return message.SerializeToString(), params, "legacy: fetch ops removed"


def legacy_drop_op(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    message = _parse(program)
    block = message.blocks[0]
    index = rng.randrange(len(block.ops))
    op_type = block.ops[index].type
    del block.ops[index]
    return message.SerializeToString(), params, f"legacy: op #{index} ({op_type}) removed"


def byte_flips(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    data = bytearray(program)
    count = rng.choice([1, 2, 4, 8])
    for _ in range(count):
        position = rng.randrange(len(data))
        data[position] ^= rng.randrange(1, 256)
    return bytes(data), params, f"{count} random byte flip(s) in the program"


def truncate_program(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    cut = rng.randrange(1, len(program))
    return program[:cut], params, f"program truncated to {cut} of {len(program)} bytes"


def truncate_params(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    cut = rng.randrange(0, len(params))
    return program, params[:cut], f"params truncated to {cut} of {len(params)} bytes"


def params_flips(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    """Flips in the first 200 bytes of the parameter stream (headers and tensor descs live there)."""
    data = bytearray(params)
    for _ in range(rng.choice([1, 2, 4])):
        data[rng.randrange(min(200, len(data)))] ^= rng.randrange(1, 256)
    return program, bytes(data), "byte flips in the parameter file's headers"


# ---------------------------------------------------------------- PIR (.json)


def _pir(program: bytes) -> dict:
    return json.loads(program)


def _ops(doc: dict) -> list:
    return doc["program"]["regions"][0]["blocks"][0]["ops"]


def pir_drop_op(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    doc = _pir(program)
    ops = _ops(doc)
    index = rng.randrange(len(ops))
    tag = ops[index].get("#")
    del ops[index]
    return json.dumps(doc).encode(), params, f"pir: op #{index} ({tag}) removed"


def pir_undeclared_input(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    doc = _pir(program)
    ops = [op for op in _ops(doc) if op.get("I")]
    op = rng.choice(ops)
    inputs = op["I"] if isinstance(op["I"], list) else [op["I"]]
    target = rng.choice(inputs)
    if isinstance(target, dict):
        target["%"] = 100000 + rng.randrange(1000)
    return json.dumps(doc).encode(), params, f"pir: {op.get('#')} input renamed to an undefined value"


def pir_mutate_attr(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    doc = _pir(program)
    ops = [op for op in _ops(doc) if isinstance(op.get("A"), list) and op["A"]]
    op = rng.choice(ops)
    attr = rng.choice(op["A"])
    replacement = rng.choice([None, -1, "x", [], {"#": "0.a_i32", "D": 2**40}, 1e308])
    if isinstance(attr, dict) and "AT" in attr:
        attr["AT"] = replacement
    else:
        op["A"][op["A"].index(attr)] = replacement
    return json.dumps(doc).encode(), params, f"pir: {op.get('#')} attribute replaced by {replacement!r}"


def pir_dtype_to_int(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    doc = _pir(program)
    nodes = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("#") == "0.t_dtensor":
                nodes.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    rng.choice(nodes)["D"][0] = rng.choice([5, None, "f32"])
    return json.dumps(doc).encode(), params, "pir: a dtype node replaced"


def pir_drop_fetch(program: bytes, params: bytes, rng: random.Random) -> Mutant:
    doc = _pir(program)
    block = doc["program"]["regions"][0]["blocks"][0]
    block["ops"] = [op for op in block["ops"] if op.get("#") != "1.fetch"]
    return json.dumps(doc).encode(), params, "pir: fetch ops removed"


LEGACY: dict[str, Callable] = {
    "drop_var": legacy_drop_var, "undeclared_input": legacy_undeclared_input,
    "undeclared_output": legacy_undeclared_output, "mutate_attr": legacy_mutate_attr,
    "dangling_sub_block": legacy_dangling_sub_block, "drop_fetch": legacy_drop_fetch, "drop_op": legacy_drop_op,
    "byte_flips": byte_flips, "truncate_program": truncate_program, "truncate_params": truncate_params,
    "params_flips": params_flips,
}
PIR: dict[str, Callable] = {
    "drop_op": pir_drop_op, "undeclared_input": pir_undeclared_input, "mutate_attr": pir_mutate_attr,
    "dtype_to_int": pir_dtype_to_int, "drop_fetch": pir_drop_fetch, "byte_flips": byte_flips,
    "truncate_program": truncate_program, "truncate_params": truncate_params, "params_flips": params_flips,
}
