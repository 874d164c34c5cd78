"""fp32 vs bf16 vs int8 on the CPU backends, side by side in one run, with accuracy beside the latency.

    pytest benchmarks/test_bench_int8.py --benchmark-json=.benchmarks/int8.json

Per model and batch, every (backend, precision) variant is timed in one
interleaved loop: Paddle Inference fp32, bf16 (oneDNN bfloat16) and int8
(Paddle's post-training quantization on oneDNN int8), ONNX Runtime fp32 and int8 (static QDQ), OpenVINO
fp32, bf16 (the CPU plugin's inference precision) and int8 (NNCF). Accuracy is measured
against the fp32 Paddle Inference reference: digits_cnn and digits_resnet are
the zoo's trained classifiers, judged on their held-out test split (calibrated
on their calibration split); mobilenet_v2 and resnet18 have random weights, so only their speed
means something (their low-precision outputs are reported as relative L2 and
top-1 agreement, calibrated on 32 sample inputs of another seed).
"""

from __future__ import annotations

import numpy as np
import pytest

import hwdeploy
from hwdeploy.errors import HwdeployError
from hwdeploy.sdk.testing import rel_l2
from conftest import BATCHES, THREADS, interleaved, timed, zoo_model

PRECISION_MODELS = ["mobilenet_v2", "resnet18", "digits_cnn", "digits_resnet"]
TRAINED_MODELS = ["digits_cnn", "digits_resnet"]
VARIANTS = [("paddle-inference", "fp32"), ("paddle-inference", "bf16"), ("paddle-inference", "int8"),
            ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
_variants: dict[str, tuple[dict, dict]] = {}
_accuracy: dict[str, dict] = {}


def variants(name: str) -> tuple[dict[str, object], dict[str, str]]:
    """``({"backend precision": predictor}, {"backend precision": why unavailable})`` for zoo model ``name``."""
    if name not in _variants:
        z = zoo_model(name)
        calibration = None if z.trained else z.sample_inputs(32, seed=1234)[0]
        ready, missing = {}, {}
        for backend, precision in VARIANTS:
            options = {"calibration": calibration} if precision == "int8" else {}
            try:
                ready[f"{backend} {precision}"] = hwdeploy.predictor(z.model, "cpu", backend=backend, threads=THREADS,
                                                                     precision=precision, **options)
            except HwdeployError as exc:
                missing[f"{backend} {precision}"] = f"{type(exc).__name__}: {exc}"
        _variants[name] = ready, missing
    return _variants[name]


def accuracy_facts(name: str, predictors: dict[str, object]) -> dict[str, dict[str, float]]:
    """Per variant: relative L2 and top-1 agreement against the Paddle fp32 reference; test accuracy if trained."""
    if name not in _accuracy:
        z = zoo_model(name)
        x, y = z.test_split() if z.trained else (z.sample_inputs(32, seed=7)[0], None)

        def logits(p):
            return np.concatenate([p.run(x[i:i + 16])[0] for i in range(0, len(x), 16)])

        with hwdeploy.predictor(z.model, "cpu", threads=THREADS) as reference:
            expected = logits(reference)
        facts = {"paddle-inference fp32": {"rel_l2": 0.0, "top1_agreement": 1.0}}
        if y is not None:
            facts["paddle-inference fp32"]["accuracy"] = float((expected.argmax(1) == y).mean())
        for key, p in predictors.items():
            got = logits(p)
            facts[key] = {"rel_l2": rel_l2(got, expected),
                          "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean())}
            if y is not None:
                facts[key]["accuracy"] = float((got.argmax(1) == y).mean())
        _accuracy[name] = facts
    return _accuracy[name]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", PRECISION_MODELS)
def test_precision_side_by_side(benchmark, name, batch):
    predictors, missing = variants(name)
    if not any(key.endswith(("int8", "bf16")) for key in predictors):
        pytest.skip(f"no lower-precision variant for {name}: {missing}")
    for key, p in predictors.items():  # each runs the precision it was asked for, read back from the runtime
        assert p.receipt().options["precision"] == key.split()[1], (key, p.receipt().fallback_evidence)
    inputs = zoo_model(name).sample_inputs(batch, seed=0)
    side_by_side = interleaved({key: (lambda p=p: p.run(*inputs)) for key, p in predictors.items()},
                               budget=10.0, block=8, lo=6, hi=40, settle=0.05)
    medians = {key: v["median_s"] for key, v in side_by_side.items()}
    fp32 = {key: s for key, s in medians.items() if key.endswith("fp32")}
    fastest_fp32 = min(fp32, key=fp32.get)
    facts = accuracy_facts(name, predictors)
    benchmark.group = f"precision {name} b{batch}"
    benchmark.extra_info.update(
        kind="precision", model=name, batch=batch, threads=THREADS, trained=zoo_model(name).trained,
        fastest_fp32=fastest_fp32, unavailable=missing, reference_accuracy=facts["paddle-inference fp32"],
        variants={key: {"ms": s * 1e3, "speedup_vs_fastest_fp32": fp32[fastest_fp32] / s, **facts[key]}
                  for key, s in medians.items()})
    fastest = min(medians, key=medians.get)
    timed(benchmark, lambda: predictors[fastest].run(*inputs))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", TRAINED_MODELS)
def test_fastest_within_an_int8_budget(benchmark, name, batch):
    """What ``auto:fastest`` with ``accuracy="int8"`` chooses on a trained model (a figure: no assertion on it)."""
    z = zoo_model(name)
    inputs = z.sample_inputs(batch, seed=0)
    chosen = hwdeploy.predictor(z.model, "auto:fastest", accuracy="int8", sample_inputs=inputs, refresh=True,
                                threads=THREADS)
    selection = chosen.receipt().selection
    benchmark.group = f"fastest int8 budget {name} b{batch}"
    benchmark.extra_info.update(
        kind="fastest-precision", model=name, batch=batch, threads=THREADS, chosen=selection["chosen"],
        candidates=[{k: r.get(k) for k in ("backend", "precision", "median_ms", "parity", "error", "held_back")}
                    for r in selection["candidates"]])
    timed(benchmark, lambda: chosen.run(*inputs))
