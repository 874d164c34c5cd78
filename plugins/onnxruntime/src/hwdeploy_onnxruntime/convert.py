"""Paddle -> ONNX with paddle2onnx, in a child process.

paddle2onnx imports Paddle and, on an operator it cannot map, *aborts the
process* (SIGABRT, "Due to the unsupported operators, the conversion is
aborted", verified with paddle2onnx 2.1.0 on Paddle 3.3.1). So the export runs
through :func:`hwdeploy.sdk.isolation.run_probe`; the caller gets a
:class:`~hwdeploy.errors.ConversionError` (or :class:`UnsupportedOpsError`
naming the operators) instead of dying.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwdeploy.errors import ConversionError, UnsupportedOpsError
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.onnx_export import DEFAULT_OPSET, check_opset, paddle2onnx_in_child

EXPORT_TIMEOUT = 900.0
ABORT_MARK = "unsupported operators"

# PIR op names whose paddle2onnx mapper is registered under the legacy name.
_ALIASES = {
    "add": "elementwise_add", "subtract": "elementwise_sub", "multiply": "elementwise_mul",
    "divide": "elementwise_div", "maximum": "elementwise_max", "minimum": "elementwise_min",
    "floor_divide": "elementwise_floordiv", "remainder": "elementwise_mod", "elementwise_pow": "pow",
    "matmul": "matmul_v2", "flatten": "flatten_contiguous_range", "expand": "expand_v2",
    "unsqueeze": "unsqueeze2", "squeeze": "squeeze", "topk": "top_k_v2", "max": "reduce_max",
    "mean": "reduce_mean", "min": "reduce_min", "prod": "reduce_prod", "all": "reduce_all",
    "any": "reduce_any", "argmax": "arg_max", "argmin": "arg_min", "nonzero": "where_index",
    "pool2d": "pool2d", "conv2d": "conv2d", "full_": "full",
}
_STRUCTURAL = {"data", "fetch", "feed", "parameter", "constant"}


def export_in_child(program: str, params: str, output: str, opset: int) -> dict[str, Any]:
    """Run paddle2onnx (called in the child process); return facts about the ONNX file."""
    version = paddle2onnx_in_child(program, params, output, opset)
    import onnx

    onnx_model = onnx.load(output, load_external_data=False)
    opsets = [o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")]
    return {"paddle2onnx": version, "onnx_opset": max(opsets) if opsets else opset,
            "onnx_nodes": len(onnx_model.graph.node)}


def supported_ops_in_child() -> list[str]:
    """paddle2onnx's PIR operator mappers (called in a child process)."""
    from paddle2onnx import paddle2onnx_cpp2py_export as p2o

    return sorted(p2o.get_all_supported_operators_pir())


def unsupported_suspects(op_types: list[str], supported: set[str]) -> list[str]:
    """The model's op types that paddle2onnx has no mapper for (best effort: its list uses legacy names)."""
    suspects = []
    for op_type in sorted(set(op_types)):
        dialect, _, name = op_type.partition(".")
        if dialect == "builtin" or name in _STRUCTURAL:
            continue
        base = name[:-1] if name.endswith("_") and name not in supported else name
        if base in supported or name in supported or _ALIASES.get(base) in supported:
            continue
        suspects.append(op_type)
    return suspects


def export_onnx(model, output_dir: Path, opset: int = DEFAULT_OPSET, filename: str = "model.onnx") -> tuple[Path, dict]:
    """Convert ``model`` (a PIR or legacy hwdeploy Model) to ``output_dir/filename``; return (path, facts)."""
    check_opset(opset)
    output = Path(output_dir) / filename
    result = run_probe(f"{__name__}:export_in_child", [str(model.program), str(model.params or ""), str(output), opset],
                       timeout=EXPORT_TIMEOUT)
    if result.ok and output.exists():
        return output, result.value
    detail = result.error or "paddle2onnx wrote no file"
    if ABORT_MARK in result.stderr_tail and model.format == "pir":
        from hwdeploy.sdk.paddle_format import load_pir_program

        listed = run_probe(f"{__name__}:supported_ops_in_child", timeout=120, cache_ttl=7 * 86400)
        ops = [op.type for op in load_pir_program(model.program).ops]
        suspects = unsupported_suspects(ops, set(listed.value or [])) if listed.ok else []
        if suspects:
            raise UnsupportedOpsError(f"paddle2onnx cannot convert {model.name or model.program}: no ONNX mapping for"
                                      f" {', '.join(suspects)} (paddle2onnx aborted: {detail})", suspects)
    lines = [line for line in result.stderr_tail.splitlines() if "[ERROR]" in line or "Error" in line]
    raise ConversionError(f"paddle2onnx could not convert {model.name or model.program}: {detail}"
                          + (f" ({lines[-1].strip()})" if lines and lines[-1].strip() not in detail else ""))
