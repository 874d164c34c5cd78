"""``auto:fastest`` with an accuracy budget: (backend, precision) candidates judged on held-back inputs.

Real ONNX Runtime and OpenVINO backends on the trained zoo model digits_cnn. No test asserts a timing: only what
passed the budget and that the choice is the fastest of those that did.
"""

import numpy as np
import pytest

import hwdeploy
from hwdeploy import fastest, zoo
from hwdeploy.errors import OptionError
from hwdeploy_openvino.predictor import bf16_unsupported

BACKENDS = ["onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def digits():
    return zoo.get("digits_cnn")


def choose(digits, **options):
    options.setdefault("sample_inputs", digits.sample_inputs(8, seed=0))
    p = hwdeploy.predictor(digits.model, "auto:fastest", threads=1, rounds=1, runs=2, warmup=1, settle=0,
                           refresh=True, **options)
    return p, p.receipt().selection


def by_precision(selection, precision):
    return [r for r in selection["candidates"] if r["precision"] == precision]


def test_an_int8_budget_lets_quantized_candidates_compete_when_they_keep_accuracy(digits):
    p, selection = choose(digits, accuracy="int8", backends=BACKENDS)
    int8 = by_precision(selection, "int8")
    assert {r["backend"] for r in int8} == set(BACKENDS)
    reference_accuracy = selection["held_back"]["reference_accuracy"]
    assert selection["held_back"]["rows"] == len(digits.test_split()[1]) and reference_accuracy > 0.9
    ov_bf16 = [r for r in by_precision(selection, "bf16") if r["backend"] == "openvino"]
    if bf16_unsupported():  # a CPU without bf16: the candidate's refusal is evidence, never a pass
        assert [r.get("parity") for r in ov_bf16] == [None] and "no bf16 on this CPU" in ov_bf16[0]["error"]
        ov_bf16 = []
    for r in int8 + ov_bf16:
        assert r["parity"] is True, r
        facts = r["held_back"]
        assert facts["top1_agreement"] >= fastest.MIN_TOP1_AGREEMENT
        assert facts["accuracy"] >= reference_accuracy - fastest.MAX_ACCURACY_DROP
        assert facts["rel_l2"] <= fastest.LOW_PRECISION_REL_L2[r["precision"]]
    passed = [r for r in selection["candidates"] if r["parity"] is True and r.get("median_ms") is not None]
    best = min(passed, key=lambda r: r["median_ms"])
    assert selection["chosen"] == {k: best[k] for k in ("device", "backend", "plugin", "precision")}
    # The predictor returned runs what was chosen, and says so.
    assert p.receipt().backend == best["backend"] and p.receipt().options.get("precision", "fp32") == best["precision"]
    # ONNX Runtime has no bf16: its refusal is evidence, not silence.
    ort_bf16 = next(r for r in by_precision(selection, "bf16") if r["backend"] == "onnxruntime")
    assert ort_bf16.get("parity") is None and "precision" in ort_bf16["error"]


def test_a_candidate_that_misses_the_budget_is_never_chosen_however_fast(digits):
    """An all-zero calibration set clips every real digit: its int8 candidates lose accuracy and are refused."""
    zeros = np.zeros((64, 1, 32, 32), np.float32)
    _p, selection = choose(digits, accuracy="int8", backends=["onnxruntime"], calibration=zeros)
    (int8,) = by_precision(selection, "int8")
    assert int8["parity"] is False and "accuracy budget (int8" in int8["error"], int8
    assert int8["held_back"]["top1_agreement"] < fastest.MIN_TOP1_AGREEMENT or (
        int8["held_back"]["accuracy"] < selection["held_back"]["reference_accuracy"] - fastest.MAX_ACCURACY_DROP)
    assert int8.get("median_ms") is None and selection["chosen"]["precision"] == "fp32"


def test_a_relative_l2_budget_judges_every_precision_by_it(digits):
    _p, selection = choose(digits, accuracy=1e-3, backends=BACKENDS)
    for r in selection["candidates"]:
        if r["precision"] != "fp32" and r.get("held_back"):
            assert r["parity"] is False and r["held_back"]["rel_l2"] > 1e-3 and "relative L2" in r["error"]
    assert selection["chosen"]["precision"] == "fp32"
    assert all(r["rel_l2_budget"] == 1e-3 for r in selection["candidates"])


def test_the_default_budget_is_fp32_only(digits):
    _p, selection = choose(digits, backends=BACKENDS)
    assert {r["precision"] for r in selection["candidates"]} == {"fp32"} and selection["held_back"] is None


def test_the_cached_decision_reloads_the_chosen_precision(digits):
    p, selection = choose(digits, accuracy="int8", backends=["openvino"])
    again = hwdeploy.predictor(digits.model, "auto:fastest", threads=1, rounds=1, runs=2, warmup=1, settle=0,
                               accuracy="int8", backends=["openvino"], sample_inputs=digits.sample_inputs(8, seed=0))
    cached = again.receipt().selection
    assert cached["cached"] is True and cached["chosen"] == selection["chosen"]
    assert again.receipt().options["precision"] == selection["chosen"]["precision"]
    # Another calibration set is another decision (the key follows the data).
    other = hwdeploy.predictor(digits.model, "auto:fastest", threads=1, rounds=1, runs=2, warmup=1, settle=0,
                               accuracy="int8", backends=["openvino"], sample_inputs=digits.sample_inputs(8, seed=0),
                               calibration=digits.calibration_split()[:32])
    assert other.receipt().selection["key"] != selection["key"]


def test_what_a_budget_cannot_judge_is_refused(digits):
    mlp = zoo.get("mlp")  # random weights, no test split: nothing to judge lower precision on
    with pytest.raises(OptionError, match="held-back inputs"):
        hwdeploy.predictor(mlp.model, "auto:fastest", accuracy="bf16")
    calibration = digits.calibration_split()
    with pytest.raises(OptionError, match="calibration data"):
        hwdeploy.predictor(digits.model, "auto:fastest", accuracy="int8", calibration=calibration,
                           accuracy_inputs=[calibration])
    with pytest.raises(OptionError, match="chooses the precision"):
        hwdeploy.predictor(digits.model, "auto:fastest", precision="int8")
    for bad in ("fp16", 1.5, 0.0, True):
        with pytest.raises(OptionError, match="accuracy"):
            hwdeploy.predictor(digits.model, "auto:fastest", accuracy=bad)


def test_on_a_model_where_int8_pays_off_every_int8_candidate_keeps_the_budget():
    """digits_resnet (dense 3x3 convolutions, trained): int8 is where the speed is (README: auto:fastest picks it;
    which candidate wins is a measurement, so this test checks only the budget and that the fastest passing won)."""
    resnet = zoo.get("digits_resnet")
    _p, selection = choose(resnet, accuracy="int8", backends=BACKENDS)
    int8 = by_precision(selection, "int8")
    assert len(int8) == 2 and all(r["parity"] is True and r.get("median_ms") for r in int8), int8
    passed = [r for r in selection["candidates"] if r["parity"] is True and r.get("median_ms") is not None]
    assert selection["chosen"]["precision"] == min(passed, key=lambda r: r["median_ms"])["precision"]
