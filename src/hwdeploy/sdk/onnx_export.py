"""Paddle -> ONNX with paddle2onnx: the one conversion path of every plugin whose runtime reads ONNX.

The built-in conversion target ``onnx`` (:mod:`hwdeploy.builtin.onnx`) calls
:func:`export_onnx`; a plugin never runs paddle2onnx itself. It asks for the
cached file, inside its own hooks::

    artifact = hwdeploy.convert(model, "onnx", **onnx_export.onnx_options(opset))
    onnx_file = artifact.path()

so every runtime that reads ONNX shares one export per model content hash
(and opset), and all fail the same way on a model paddle2onnx cannot take:
:class:`~hwdeploy.errors.UnsupportedOpsError` naming the ops.

paddle2onnx imports Paddle, *aborts its process* (SIGABRT) on an operator it
has no mapper for, and prints its other failures and calls ``sys.exit``
(paddle2onnx 2.1.0, Paddle 3.3.1). So the export runs in a child process
(:func:`hwdeploy.sdk.isolation.run_probe`) with paddle2onnx's log captured to a
file that survives the abort. paddle2onnx 2.1 checks every op against its
mapper registry first but does not print which ops failed (its logger loses the
line), so on that abort the ops are found by the same rule paddle2onnx applies
(:func:`paddle2onnx_name` + its registry); when a mapper fails on one op
(e.g. ``nearest_interp`` in NHWC), paddle2onnx stops there and the error names
that op.

One known mismatch is fixed up before paddle2onnx reads the program
(:func:`fix_up_for_paddle2onnx`, on a copy; the facts list what was changed):
Paddle 3.3 writes the ``scale`` of the interpolation ops as float64 and
paddle2onnx 2.1's mappers take only float32 ("the 0th elementwise MUST be
ir::FloatAttribute"). The scales are small exact factors (2.0, 0.5), so the
float32 copy means the same resize.

Importing this module imports neither Paddle nor paddle2onnx.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, NoReturn

from hwdeploy.errors import ConversionError, UnsupportedOpsError
from hwdeploy.sdk.hostinfo import dist_version
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.options import Option

#: The conversion target every ONNX-consuming plugin converts through.
TARGET = "onnx"
DEFAULT_OPSET = 13
EXPORT_TIMEOUT = 900.0
#: What paddle2onnx prints (stderr) before aborting on ops it has no mapper for.
ABORT_MARK = "unsupported operators"

# paddle2onnx 2.1 ``convert_pir_op_name`` (paddle2onnx/mapper/exporter.h): PIR names whose mapper is
# registered under another name.
_P2O_NAMES = {
    "matmul": "matmul_v2", "batch_norm_": "batch_norm", "topk": "top_k_v2",
    "repeat_interleave_with_tensor_index": "repeat_interleave", "expand": "expand_v2", "assign_value_": "assign_value",
    "flatten": "flatten_contiguous_range", "unsqueeze": "unsqueeze2", "arange": "range", "argmax": "arg_max",
    "floor_divide": "elementwise_floordiv", "subtract": "elementwise_sub", "multiply": "elementwise_mul",
    "divide": "elementwise_div", "remainder": "elementwise_mod", "minimum": "elementwise_min",
    "maximum": "elementwise_max", "min": "reduce_min", "max": "reduce_max", "mean": "reduce_mean", "sum": "reduce_sum",
    "prod": "reduce_prod", "any": "reduce_any", "all": "reduce_all", "numel": "size", "hardswish": "hard_swish",
    "hardsigmoid": "hard_sigmoid", "add": "elementwise_add", "add_n": "sum", "grid_sample": "grid_sampler",
    "nonzero": "where_index",
}
# Ops paddle2onnx's registry check passes over (ModelExporter::IsOpsRegistered; parameters are not collected).
_NOT_CHECKED = {"pd_op.data", "pd_op.feed", "pd_op.fetch", "pd_op.if", "pd_op.while", "cf.yield", "pd_op.print",
                "builtin.parameter", "builtin.set_parameter"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Start export (\S+), op_id: (\d+)")
_FINISHED = re.compile(r"Finish export (\S+), op_id: (\d+)")
_LISTED = re.compile(r"not supported yet, including ([^\n]*)")
_NAMED_IN_ERROR = re.compile(r"\[OP: ([\w.]+)\]")  # a mapper's own check: "[OP: pd_op.nearest_interp] Data format ..."


#: The ``opset`` option of every conversion built on this export (paddle2onnx targets opsets 7..23).
OPSET = Option("opset", int, DEFAULT_OPSET, "ONNX opset of the paddle2onnx export", minimum=7, maximum=23,
               nullable=False)


def check_opset(opset) -> None:
    """Raise :class:`OptionError` unless ``opset`` is an ONNX opset paddle2onnx can target (7..23)."""
    OPSET.check("onnx conversion", opset)


def onnx_options(opset: int | None = None) -> dict[str, Any]:
    """The options to pass to ``hwdeploy.convert(model, "onnx", ...)`` for ``opset``.

    The default opset is left out, so that every plugin asking for the default hits the same cache entry.
    """
    return {} if opset is None or opset == DEFAULT_OPSET else {"opset": opset}


def converter_missing(purpose: str) -> str:
    """Why paddle2onnx cannot convert here ("" when it can); ``purpose`` ends the first reason ("to ONNX")."""
    if not dist_version("paddle2onnx"):
        return f"paddle2onnx is not installed: it converts Paddle models {purpose} (pip install paddle2onnx)"
    if not dist_version("paddlepaddle", "paddlepaddle-gpu"):
        return ("paddlepaddle is not installed: paddle2onnx needs it to read Paddle models"
                " (pip install 'hwdeploy[paddle]')")
    return ""


def paddle2onnx_name(pir_op: str) -> str:
    """The name paddle2onnx 2.1 looks a PIR op up by (``pd_op.matmul`` -> ``matmul_v2``, ``builtin.combine``
    -> ``builtin_combine``), as its ``convert_pir_op_name`` does."""
    if "pd_op." in pir_op:
        name = pir_op[pir_op.index("pd_op.") + len("pd_op."):]
    elif pir_op.startswith("builtin."):
        name = "builtin_" + pir_op[len("builtin."):]
    else:
        name = pir_op
    return _P2O_NAMES.get(name, name)


def unsupported(op_types, supported: set[str]) -> list[str]:
    """The op types (PIR names) that paddle2onnx's registry check refuses, sorted, each once."""
    return sorted({op for op in op_types if op not in _NOT_CHECKED and paddle2onnx_name(op) not in supported})


def narrow_to_export(specs, exported_shapes) -> tuple[list, list[str]]:
    """The program's input specs with the dims the exported graph fixed (a ``-1`` the export made static, as
    paddle2onnx does for ``multiclass_nms3``: batch 1), and a note per narrowed input for the receipt.

    ``exported_shapes`` lists each input's shape in the exported graph (``-1`` or None: dynamic). With it an
    input the runtime would reject is an :class:`~hwdeploy.errors.InputError` before the run, not a runtime
    error after it.
    """
    from dataclasses import replace

    narrowed, notes = [], []
    for spec, exported in zip(specs, exported_shapes):
        exported = list(exported or [])
        if len(exported) == len(spec.shape):
            shape = tuple(e if d < 0 and isinstance(e, int) and e >= 0 else d for d, e in zip(spec.shape, exported))
            if shape != tuple(spec.shape):
                notes.append(f"input {spec.name}: the ONNX export is static at {list(shape)} (the program: "
                             f"{list(spec.shape)}); other shapes are refused before the run")
                spec = replace(spec, shape=shape)
        narrowed.append(spec)
    return narrowed, notes


# ---------------------------------------------------------------- the export


def export_onnx(model, output_dir: Path, opset: int = DEFAULT_OPSET, filename: str = "model.onnx") -> tuple[Path, dict]:
    """Convert ``model`` (a PIR or legacy hwdeploy Model) to ``output_dir/filename``; return (path, facts).

    ``facts``: ``paddle2onnx`` (version), ``onnx_opset`` (the opset written, after paddle2onnx's
    automatic upgrade), ``onnx_nodes``. Raises :class:`UnsupportedOpsError` naming the ops paddle2onnx
    cannot convert, :class:`ConversionError` for any other failure; the calling process never dies.
    Plugins get this through ``hwdeploy.convert(model, "onnx")`` (cached), not by calling it.
    """
    check_opset(opset)
    output = Path(output_dir) / filename
    fd, log_name = tempfile.mkstemp(prefix="paddle2onnx-", suffix=".log")
    os.close(fd)
    log = Path(log_name)
    try:
        result = run_probe(f"{__name__}:export_in_child",
                           [str(model.program), str(model.params or ""), str(output), opset, str(log)],
                           timeout=EXPORT_TIMEOUT)
        if result.ok and output.exists():
            return output, result.value
        printed = log.read_text(errors="replace")
    finally:
        log.unlink(missing_ok=True)
    _raise_failure(model, result, _ANSI.sub("", printed))


def _raise_failure(model, result, printed: str) -> NoReturn:
    name = model.name or model.program
    version = dist_version("paddle2onnx")
    if result.timed_out:
        raise ConversionError(f"paddle2onnx {version} did not convert {name} within {EXPORT_TIMEOUT:g}s")
    errors = _error_lines(printed + "\n" + result.stderr_tail)
    if ABORT_MARK in result.stderr_tail or _LISTED.search(printed):
        ops = registry_refusals(model) or _listed(printed)
        if ops:
            raise UnsupportedOpsError(f"paddle2onnx {version} cannot convert {name}: no ONNX mapping for"
                                      f" {', '.join(ops)} (it aborted before exporting anything)", ops)
    named = [m.group(1) for line in errors for m in [_NAMED_IN_ERROR.search(line)] if m]
    failed = failing_op(printed) or (named[0] if named else "")
    detail = errors[0] if errors else (result.error or "paddle2onnx wrote no file")
    if failed:
        raise UnsupportedOpsError(f"paddle2onnx {version} cannot convert {failed} in {name}: {detail} (paddle2onnx"
                                  " stops at the first op it fails on: ops after it were not tried)", [failed])
    raise ConversionError(f"paddle2onnx {version} could not convert {name}: {detail}")


def _error_lines(text: str) -> list[str]:
    """paddle2onnx's error messages, without timestamps: ``[ERROR]\tFailed to convert ...: (Unimplemented) ...``."""
    out = []
    for line in text.splitlines():
        if "[ERROR]" in line:
            message = line.split("[ERROR]", 1)[1].replace("[Paddle2ONNX]", "").strip()
            if message and message not in out:
                out.append(message)
    return out


def _listed(printed: str) -> list[str]:
    """Op names paddle2onnx itself listed as unsupported (releases whose logger prints the line)."""
    names = []
    for match in _LISTED.finditer(printed):
        names += [n.strip() for n in match.group(1).split(",") if n.strip()]
    return sorted(set(names))


def failing_op(printed: str) -> str:
    """The op paddle2onnx was exporting when it failed: a ``Start export OP`` with no ``Finish export`` ("" if none)."""
    open_ops: dict[str, str] = {}
    for line in printed.splitlines():
        if m := _STARTED.search(line):
            open_ops[m.group(2)] = m.group(1)
        elif m := _FINISHED.search(line):
            open_ops.pop(m.group(2), None)
    return list(open_ops.values())[-1] if open_ops else ""


def registry_refusals(model) -> list[str]:
    """Every op type of ``model`` that paddle2onnx's mapper registry does not have (its own rule), in a child."""
    listed = run_probe(f"{__name__}:op_types_and_registry_in_child", [str(model.program), model.format],
                       timeout=300)
    if not listed.ok:
        return []
    return unsupported(listed.value["ops"], set(listed.value["supported"]))


def _legacy_op_types(program: str) -> Iterator[str]:
    """The PIR op types paddle2onnx sees for a legacy ProgramDesc (it translates it to PIR first)."""
    import paddle

    paddle.enable_static()
    with paddle.pir_utils.OldIrGuard():
        desc = paddle.static.Program.parse_from_string(Path(program).read_bytes()).desc
    translated = paddle.pir.translate_to_pir(desc)

    def walk(block):
        for op in block.ops:
            yield op.name()
            for sub in op.blocks():
                yield from walk(sub)

    yield from walk(translated.global_block())


# ---------------------------------------------------------------- in the child process


def op_types_and_registry_in_child(program: str, fmt: str) -> dict[str, list[str]]:
    """The model's op types (every block) and paddle2onnx's PIR mapper registry (called in a child)."""
    from paddle2onnx import paddle2onnx_cpp2py_export as p2o

    if fmt == "pir":
        from hwdeploy.sdk.paddle_format import iter_all_ops, load_pir_program

        ops = [op.type for op in iter_all_ops(load_pir_program(Path(program)).ops)]
    else:
        ops = list(_legacy_op_types(program))
    return {"ops": sorted(set(ops)), "supported": sorted(p2o.get_all_supported_operators_pir())}


#: PIR interpolation ops whose ``scale`` paddle2onnx 2.1 reads as float32 (Paddle 3.3 writes float64).
INTERPOLATION_OPS = ("nearest_interp", "bilinear_interp", "bicubic_interp", "linear_interp", "trilinear_interp")


def fix_up_for_paddle2onnx(program: dict) -> list[str]:
    """Rewrite, in place, what paddle2onnx 2.1 misreads in a PIR program (its parsed JSON); say what changed.

    The ``scale`` of the interpolation ops goes from float64 to float32 when float32 holds it exactly
    (every scale a model uses in practice: 2.0, 0.5, 0.25); a scale float32 would round is left as it is,
    so paddle2onnx fails on it and names the op rather than resizing by another factor.
    """
    import numpy as np

    rewritten: dict[str, int] = {}
    stack: list[Any] = [program]
    while stack:  # iterative: the nesting of a hostile file cannot exhaust the interpreter's stack
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        name = str(node.get("#", "")).split(".", 1)[-1]
        if name in INTERPOLATION_OPS and isinstance(node.get("A"), list):
            for attr in node["A"]:
                if not (isinstance(attr, dict) and attr.get("N") == "scale" and isinstance(attr.get("AT"), dict)):
                    continue
                elements = attr["AT"].get("D")
                if not isinstance(elements, list) or not all(
                        isinstance(e, dict) and str(e.get("#", "")).endswith(".a_f64")
                        and isinstance(e.get("D"), (int, float)) and float(np.float32(e["D"])) == e["D"]
                        for e in elements) or not elements:
                    continue
                for element in elements:
                    element["#"] = element["#"][: -len("a_f64")] + "a_f32"
                rewritten[name] = rewritten.get(name, 0) + 1
        stack.extend(node.values())
    return [f"pd_op.{op}: scale float64 -> float32 in {n} op{'s' if n > 1 else ''} (paddle2onnx 2.1 reads float32)"
            for op, n in sorted(rewritten.items())]


def export_in_child(program: str, params: str, output: str, opset: int, log: str) -> dict[str, Any]:
    """Run paddle2onnx, its output (C++ and Python) going to ``log``; return facts about the ONNX file.

    Called in the child process only: paddle2onnx may abort it. ``verbose=True`` makes paddle2onnx
    log each op it starts and finishes, which names the op it fails on. The child works in a private
    directory, removed afterwards: paddle2onnx's optimiser runs ONNX Runtime's symbolic shape inference,
    which writes ``sym_shape_infer_temp.onnx`` and its external data into the working directory when a
    shape is only known at run time (tiny_segmenter), and the caller's directory is not ours to litter.
    """
    import shutil

    program, params, output, log = (os.path.abspath(p) if p else p for p in (program, params, output, log))
    scratch, previous = tempfile.mkdtemp(prefix="paddle2onnx-cwd-", dir=os.path.dirname(output)), os.getcwd()
    os.chdir(scratch)
    try:
        return _run_paddle2onnx(program, params, output, opset, log)
    finally:
        os.chdir(previous)
        shutil.rmtree(scratch, ignore_errors=True)


def _run_paddle2onnx(program: str, params: str, output: str, opset: int, log: str) -> dict[str, Any]:
    import json
    import sys

    import paddle2onnx

    fixups: list[str] = []
    if program.endswith(".json"):  # PIR
        parsed = json.loads(Path(program).read_text())
        fixups = fix_up_for_paddle2onnx(parsed)
        if fixups:  # paddle2onnx reads the fixed copy (the params file is passed as it is)
            program = str(Path(output).with_name("fixed-program.json"))
            Path(program).write_text(json.dumps(parsed))
    sys.stdout.flush()
    saved = os.dup(1)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)  # C++ std::cout and Python prints alike; each line is flushed, so it survives an abort
    try:
        paddle2onnx.export(program, params, output, opset_version=opset, auto_upgrade_opset=True, verbose=True,
                           enable_onnx_checker=True, enable_optimize=True)
    except SystemExit:  # paddle2onnx prints its error and calls sys.exit(-1): the parent reads the log
        raise RuntimeError("paddle2onnx exited without converting") from None
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(fd)
        os.close(saved)
        if fixups:
            Path(program).unlink(missing_ok=True)
    import onnx

    onnx_model = onnx.load(output, load_external_data=False)
    opsets = [o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")]
    return {"paddle2onnx": paddle2onnx.__version__, "onnx_opset": max(opsets) if opsets else opset,
            "onnx_nodes": len(onnx_model.graph.node), "program_fixups": fixups}
