"""fp32 vs int8 (static QDQ quantization) on ONNX Runtime, side by side, with accuracy beside the latency.

    pytest benchmarks/test_bench_int8.py --benchmark-json=.benchmarks/int8.json

digits_cnn is the zoo's trained classifier: its int8 accuracy is judged on its
held-out test split (calibrated on its calibration split). mobilenet_v2 has
random weights, so only its speed means something (its int8 outputs are
reported as relative L2 and top-1 agreement against fp32, calibrated on 32
sample inputs of another seed).
"""

from __future__ import annotations

import numpy as np
import pytest

import hwdeploy
from hwdeploy.errors import HwdeployError
from hwdeploy.sdk.testing import rel_l2
from conftest import BATCHES, THREADS, interleaved, timed, zoo_model

INT8_MODELS = ["mobilenet_v2", "digits_cnn"]
_pairs: dict[str, tuple] = {}


def fp32_and_int8(name: str):
    """(fp32, int8) ONNX Runtime predictors of zoo model ``name``, once per session."""
    if name not in _pairs:
        z = zoo_model(name)
        calibration = None if z.trained else z.sample_inputs(32, seed=1234)[0]
        try:
            _pairs[name] = (hwdeploy.predictor(z.model, "cpu", backend="onnxruntime", threads=THREADS),
                            hwdeploy.predictor(z.model, "cpu", backend="onnxruntime", precision="int8",
                                               calibration=calibration, threads=THREADS))
        except HwdeployError as exc:
            pytest.skip(f"onnxruntime int8 unavailable for {name}: {type(exc).__name__}: {exc}")
    return _pairs[name]


def accuracy_facts(name: str, fp32, int8) -> dict[str, float]:
    z = zoo_model(name)
    if z.trained:
        x, y = z.test_split()
    else:
        x, y = z.sample_inputs(32, seed=7)[0], None
    a = np.concatenate([fp32.run(x[i:i + 16])[0] for i in range(0, len(x), 16)])
    b = np.concatenate([int8.run(x[i:i + 16])[0] for i in range(0, len(x), 16)])
    facts = {"rel_l2": rel_l2(b, a), "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}
    if y is not None:
        facts.update(fp32_accuracy=float((a.argmax(1) == y).mean()), int8_accuracy=float((b.argmax(1) == y).mean()))
    return facts


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_vs_fp32(benchmark, name, batch):
    fp32, int8 = fp32_and_int8(name)
    assert int8.receipt().options["precision"] == "int8"
    inputs = zoo_model(name).sample_inputs(batch, seed=0)
    side_by_side = interleaved({"fp32": lambda: fp32.run(*inputs), "int8": lambda: int8.run(*inputs)},
                               budget=6.0, block=8, lo=6, hi=40, settle=0.05)
    speedup = side_by_side["fp32"]["median_s"] / side_by_side["int8"]["median_s"]
    speedup_min = side_by_side["fp32"]["min_s"] / side_by_side["int8"]["min_s"]
    benchmark.group = f"int8 {name} b{batch}"
    benchmark.extra_info.update(
        kind="int8", model=name, batch=batch, backend="onnxruntime", threads=THREADS, speedup=speedup,
        speedup_by_min=speedup_min, side_by_side_ms={k: v["median_s"] * 1e3 for k, v in side_by_side.items()},
        **accuracy_facts(name, fp32, int8))
    timed(benchmark, lambda: int8.run(*inputs))
