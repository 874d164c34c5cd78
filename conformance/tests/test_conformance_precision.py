"""The suite at lower precision on the real CPU backends: a trained model is judged by the precision's tolerance
row on real data; a random-weight model's accuracy is reported as not judgeable, never passed or failed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def run(backend: str, precision: str, models=("zoo:digits_cnn", "zoo:mlp")):
    from hwdeploy_conformance import Conformance, build_report

    conformance = Conformance("cpu", list(models), [precision], "mandatory", backend=backend)
    conformance.run()
    return build_report(conformance)


def bf16_unsupported(backend: str) -> str:
    from hwdeploy_openvino.predictor import bf16_unsupported

    assert backend == "openvino"
    return bf16_unsupported()


def checks_of(report, model):
    return {c["check"]: c for c in report["checks"] if c["model"] == model}


@pytest.mark.parametrize("backend, precision", [("paddle-inference", "int8"), ("onnxruntime", "int8"), ("openvino", "int8"),
                                                ("openvino", "bf16")])
def test_a_trained_model_is_judged_and_a_random_one_is_not(backend, precision):
    report = run(backend, precision)
    digits, mlp = checks_of(report, "digits_cnn"), checks_of(report, "mlp")
    unsupported = bf16_unsupported(backend) if precision == "bf16" else ""
    if unsupported:  # a CPU without bf16: the refusal is reported as a skip with its reason, never a pass
        assert digits["load"]["status"] == "skipped" and unsupported[:60] in digits["load"]["message"], digits["load"]
        assert report["summary"]["verdict"] == "incomplete"
        pytest.skip(unsupported)
    # The trained model: judged by the precision's own row, on rows of its held-out test split.
    parity = digits["parity"]
    assert parity["status"] == "passed", parity["message"]
    assert parity["figures"]["tolerance"]["rel_l2"] == {"int8": 1e-1, "bf16": 5e-2}[precision]
    assert parity["figures"]["distributions"] == ["sample"]
    worst = parity["figures"]["worst"]
    assert 1e-4 < worst["rel_l2"] <= parity["figures"]["tolerance"]["rel_l2"]  # really lower precision
    receipt = digits["load"]["figures"]["receipt"]
    assert receipt["backend"] == backend and receipt["options"]["precision"] == precision
    assert digits["fallback_receipt"]["status"] == "passed"
    # The random-weight model: everything but its accuracy is checked; its accuracy is not judgeable.
    assert mlp["parity"]["status"] == "skipped" and mlp["parity"]["message"].startswith("not judgeable: mlp has"
                                                                                       " random weights")
    assert mlp["load"]["status"] == "passed" and mlp["fallback_receipt"]["status"] == "passed"
    # A run with a case that cannot be judged is incomplete: never conformant, never failed for it.
    detail = report["summary"]["verdict_detail"]
    assert report["summary"]["verdict"] == "incomplete", detail
    assert list(detail["missing_mandatory"]) == [f"mlp/{precision}/parity"], detail
    assert not detail["failed_mandatory"] and not detail["failed_evidence"], detail
