"""``hwdeploy conformance coverage``: which models run where, model x backend, with the figure or the refusal.

For every model (default: the zoo) and every available backend of this machine (one column per device kind and
backend, the CPU reference first), a cell says either

- ``parity``: the backend ran the model and its outputs are within the fp32 tolerance row of the CPU
  reference, judged as the suite judges parity (element-wise, or as detections for NMS outputs); the worst
  relative L2 error (or the worst score / corner error of matched boxes) is the figure;
- ``mismatch``: it ran, with the problems found;
- ``refused``: it refused the model, with the error and, for an :class:`~hwdeploy.errors.UnsupportedOpsError`,
  every op it named (the message keeps the counts).

A backend whose receipt shows fallback (a software renderer, ops on another device) still gets its figure, and
the fallback reasons are in the cell: the matrix shows what runs, the fallback policy decides what is allowed.
A backend that needs static shapes (it declares an ``input_shape`` option) is given the sample's shape for a
model with a dynamic sequence length, and the cell records it.
Every backend runs in a child process of its own (a runtime that crashes costs its column's remaining cells,
never the command), with a time limit. Inputs: the zoo's realistic sample inputs at batch 1 (what every
export takes), else random inputs of the program's specs::

    hwdeploy conformance coverage --out coverage.json --markdown coverage.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

#: Seconds one backend's column may take (conversions included: WebGL on a software renderer is slow).
COLUMN_TIMEOUT = 1800.0
SEED = 7


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--models", nargs="+", default=["zoo"], metavar="zoo|zoo:NAME|PATH",
                        help="models (default: every zoo model)")
    parser.add_argument("--backends", help="comma-separated backends to include (default: every available one)")
    parser.add_argument("--out", default="hwdeploy-coverage.json", metavar="coverage.json", help="JSON path")
    parser.add_argument("--markdown", metavar="coverage.md", help="also write the matrix as a Markdown table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a cell is a mismatch or an error")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="backend columns measured at a time (default 1; figures do not depend on timing)")


def run(args: argparse.Namespace) -> int:
    only = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    if args.jobs < 1:
        print("hwdeploy conformance coverage: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        matrix = coverage(_model_refs(args.models), only, jobs=args.jobs)
    except UnknownBackendError as exc:
        print(f"hwdeploy conformance coverage: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(matrix, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(matrix))
    refused = sum(c["status"] == "refused" for row in matrix["cells"].values() for c in row.values())
    print(f"coverage: {len(matrix['models'])} model(s) x {len(matrix['columns'])} backend(s); {refused} refused;"
          f" {args.out}" + (f", {args.markdown}" if args.markdown else ""))
    broken = [c for row in matrix["cells"].values() for c in row.values() if c["status"] in ("mismatch", "error")]
    if broken:
        print(f"coverage: {len(broken)} cell(s) ran with a mismatch or failed: see {args.out}")
    return 1 if broken and args.strict else 0


def _model_refs(args: list[str]) -> list[str]:
    refs: list[str] = []
    for arg in args:
        if arg == "zoo":
            from hwdeploy import zoo

            refs += [f"zoo:{n}" for n in zoo.names() if f"zoo:{n}" not in refs]
        elif arg not in refs:
            refs.append(arg)
    return refs


class UnknownBackendError(ValueError):
    """``--backends`` names a backend that no available device has."""


def columns(only: list[str] | None = None) -> list[dict[str, Any]]:
    """One column per (device kind, backend) available here, the CPU reference first.

    ``only`` names backends (``openvino``), columns (``cpu/openvino``) or device kinds (``webgl``: every backend
    of that kind; the reference column is always there); a name that matches nothing raises
    :class:`UnknownBackendError` listing what is available, rather than leaving the column out unsaid.
    """
    import hwdeploy

    seen, out, matched = set(), [], set()
    for d in sorted(hwdeploy.devices(), key=lambda d: (not d.reference, d.kind, d.backend, d.index)):
        if not d.available or (d.kind, d.backend) in seen:
            continue
        names = {d.backend, f"{d.kind}/{d.backend}", d.kind}
        if only and not names & set(only) and not d.reference:
            continue
        matched |= names
        seen.add((d.kind, d.backend))
        out.append({"name": f"{d.kind}/{d.backend}", "device": d.id, "backend": d.backend, "plugin": d.plugin,
                    "reference": d.reference})
    if not out or not out[0]["reference"]:
        raise RuntimeError("coverage needs the CPU reference device (hwdeploy devices lists none available)")
    unknown = [name for name in only or [] if name not in matched]
    if unknown:
        available = sorted({f"{d.kind}/{d.backend}" for d in hwdeploy.devices() if d.available})
        raise UnknownBackendError(f"--backends: no available device has {', '.join(map(repr, unknown))};"
                                  f" available here: {', '.join(available)} (or the kind or the backend part"
                                  " alone)")
    return out


def coverage(model_refs: list[str], only: list[str] | None = None, jobs: int = 1) -> dict[str, Any]:
    """The matrix: ``{"models": [...], "columns": [...], "cells": {model: {column: cell}}}``."""
    from concurrent.futures import ThreadPoolExecutor

    from hwdeploy.sdk.isolation import run_probe

    cols = columns(only)
    cells: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in model_refs}
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each column is a child process: threads only wait
        results = list(pool.map(lambda col: run_probe(f"{__name__}:column_in_child", [col, model_refs],
                                                       timeout=COLUMN_TIMEOUT), cols))
    for col, result in zip(cols, results):
        for model in model_refs:
            cells[model][col["name"]] = (result.value or {}).get(model) if result.ok else None
            if cells[model][col["name"]] is None:
                cells[model][col["name"]] = {"status": "error", "error": f"the {col['backend']} column's process"
                                             f" failed before this model: {result.error or 'no result'}"}
    return {"models": model_refs, "columns": cols, "cells": cells, "seed": SEED, "batch": 1}


def column_in_child(column: dict[str, Any], model_refs: list[str]) -> dict[str, dict[str, Any]]:
    """Every model's cell in one backend's column (runs in the child process)."""
    import hwdeploy

    out: dict[str, dict[str, Any]] = {}
    for ref in model_refs:
        try:
            out[ref] = _cell(hwdeploy.load_model(ref), column)
        except Exception as exc:  # a model that cannot even load, or a reference that fails
            out[ref] = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:400]}"}
    return out


def _inputs(model) -> list:
    from hwdeploy import zoo
    from hwdeploy.contract.model import model_io
    from hwdeploy.sdk.inputs import random_inputs

    name = model.metadata.get("zoo")
    if name:
        return zoo.sample_inputs(name, 1, SEED)
    return random_inputs(model_io(model)[0], batch=1, seed=SEED)


def _cell(model, column: dict[str, Any]) -> dict[str, Any]:
    import hwdeploy
    from hwdeploy.errors import HwdeployError, UnsupportedOpsError

    from hwdeploy_conformance.config import DEFAULT_TOLERANCES
    from hwdeploy_conformance.detection import NmsSettings
    from hwdeploy_conformance.metrics import compare_outputs

    inputs = _inputs(model)
    with hwdeploy.predictor(model, "cpu", fallback="error") as reference:
        expected = [o.copy() for o in reference.run(*inputs)]
        names = [s.name for s in reference.outputs]
    if column["reference"]:
        return {"status": "reference"}
    options = static_shape_options(model, column, inputs)
    try:
        with hwdeploy.predictor(model, column["device"], backend=column["backend"], fallback="allow", **options) as p:
            got = [o.copy() for o in p.run(*inputs)]
            fallback = p.receipt().fallback_reasons()
    except HwdeployError as exc:
        cell = {"status": "refused", "error": f"{type(exc).__name__}: {str(exc)[:600]}"}
        if isinstance(exc, UnsupportedOpsError):
            cell["ops"] = list(exc.ops)
        return cell
    problems, figures = compare_outputs(got, expected, DEFAULT_TOLERANCES["fp32"], model.metadata.get("task"),
                                        names, NmsSettings.of(model.metadata.get("nms")))
    cell = {"status": "mismatch" if problems else "parity", "figure": _figure(figures), "fallback": fallback}
    if options:
        cell["options"] = options
    if problems:
        cell["problems"] = problems[:5]
    return cell


def static_shape_options(model, column: dict[str, Any], inputs: list) -> dict[str, Any]:
    """``input_shape`` = the sample's shape, for a backend that declares the option (it needs static shapes:
    WebGL) and a model whose first input has dynamic dims besides the batch (a sequence length)."""
    import hwdeploy
    from hwdeploy.contract.model import model_io

    declared = any(plugin == column["plugin"] and schema.owner.endswith(" backend")
                   and "input_shape" in schema.options for plugin, schema in hwdeploy.option_schemas())
    io = model_io(model) if declared else None
    if not io or not io[0] or all(d >= 0 for d in io[0][0].shape[1:]):
        return {}
    return {"input_shape": list(inputs[0].shape)}


def _figure(figures: list[dict[str, Any]]) -> str:
    """The worst error of the outputs, in words: ``rel. L2 2.4e-06`` or ``boxes: score 7.7e-07, corner 2.4e-06``."""
    rel = [f["rel_l2"] for f in figures if isinstance(f.get("rel_l2"), float) and math.isfinite(f["rel_l2"])]
    boxes = [f for f in figures if "worst_score_error" in f]
    parts = []
    if boxes:
        parts.append(f"boxes: score {max(f['worst_score_error'] for f in boxes):.1e},"
                     f" corner {max(f['worst_coordinate_error'] for f in boxes):.1e}")
    if rel:
        parts.append(f"rel. L2 {max(rel):.1e}" if max(rel) > 0 else "identical")
    return "; ".join(parts) or "exact"


def markdown(matrix: dict[str, Any]) -> str:
    """The matrix as a Markdown table: a figure, or the refusal with the ops it names."""
    cols = [c["name"] for c in matrix["columns"]]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for model in matrix["models"]:
        row = [model.removeprefix("zoo:")]
        for col in cols:
            row.append(_cell_text(matrix["cells"][model][col]))
        lines.append("| " + " | ".join(row) + " |")
    status = [c["status"] for r in matrix["cells"].values() for c in r.values() if c["status"] != "reference"]
    ran = sum(s == "parity" for s in status)
    lines += ["", f"{ran} of {len(status)} cells run with parity (fp32 tolerance row, batch 1, seed"
                  f" {matrix['seed']}); the rest name what stops them."]
    return "\n".join(lines) + "\n"


def _cell_text(cell: dict[str, Any]) -> str:
    status = cell["status"]
    if status == "reference":
        return "reference"
    if status == "parity":
        text = f"✓ {cell['figure']}"
        if cell.get("fallback"):  # the first reason without its explanations (the JSON has them all)
            reason, previous = cell["fallback"][0], ""
            while reason != previous:  # innermost parenthesised asides first; "op(s)" has no space before it
                previous, reason = reason, re.sub(r" \([^()]*\)", "", reason)
            reason = (reason if " ran off " in reason else reason.split(":")[0]).strip()  # ops: keep their names
            more = f"; +{len(cell['fallback']) - 1} more" if len(cell["fallback"]) > 1 else ""
            text += f" (fallback: {reason[:100]}{'…' if len(reason) > 100 else ''}{more})"
        return text
    if status == "mismatch":
        return "✗ " + "; ".join(cell.get("problems", []))[:120].replace("|", "/")
    if cell.get("ops"):
        return "refused: " + ", ".join(cell["ops"])
    return f"{status}: " + cell.get("error", "")[:120].replace("|", "/").replace("\n", " ")
