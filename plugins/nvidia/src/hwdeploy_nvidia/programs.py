"""Read what a (converted or optimized) program will execute, without importing Paddle.

The receipt's TensorRT evidence comes from here: how many TensorRT engine ops
a program holds and which ops stay outside TensorRT (run by Paddle's own CUDA
kernels). Both program formats are read by the SDK's model-format reader
(:mod:`hwdeploy.sdk.paddle_format`): PIR ``.json`` and legacy ``.pdmodel`` ProgramDescs.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from hwdeploy.sdk.paddle_format import legacy_op_types, load_pir_program

ENGINE_OPS = ("pd_op.tensorrt_engine", "tensorrt_engine")
#: Feeding, fetching, parameters and IR plumbing: not computation.
_STRUCTURAL = ("pd_op.data", "pd_op.feed", "pd_op.fetch", "feed", "fetch")
_ENGINE_FILE = re.compile(r'[^"\s\\]*engine_\d+_\d+\.trt')


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
