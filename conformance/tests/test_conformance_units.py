"""Unit tests of the suite's parts that need no worker process: metrics, config, inputs, reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings

from hwdeploy.contract.model import TensorSpec
from hwdeploy_conformance import checks as C
from hwdeploy_conformance.config import (DEFAULT_TOLERANCES, ConfigError, load_config, load_expected_failures)
from hwdeploy_conformance.inputs import InputCase, InputMaker
from hwdeploy_conformance.metrics import compare_outputs, cosine, normalised_max_abs, rel_l2, topk_agreement
from hwdeploy_conformance.report import summarize, write_junit
from hwdeploy_conformance.runner import CheckResult, _LineReader, _outcome, crash_evidence

FP32 = DEFAULT_TOLERANCES["fp32"]


# ---------------------------------------------------------------- metrics
def test_relative_metrics_measure_scale_free_error():
    ref = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
    assert rel_l2(ref * 1.001, ref) == pytest.approx(1e-3, rel=1e-3)
    assert rel_l2(ref * 1e-6 * 1.001, ref * 1e-6) == pytest.approx(1e-3, rel=1e-3)  # same at any scale
    assert normalised_max_abs(ref + np.array([0, 0, 0, 0.04]), ref) == pytest.approx(0.01)
    assert cosine(np.array([1.0, 0]), np.array([0, 1.0])) == 0.0
    assert cosine(-ref, ref) == pytest.approx(-1.0)


def test_compare_flags_drift_but_not_rounding():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 10)).astype(np.float32)
    rounding = ref + np.float32(1e-7) * rng.standard_normal(ref.shape).astype(np.float32)
    assert compare_outputs([rounding], [ref], FP32, "classification")[0] == []
    problems, figures = compare_outputs([ref * np.float32(1.001)], [ref], FP32, "classification")
    assert any("relative L2 error" in p for p in problems)
    assert figures[0]["top1"] == 1.0  # a uniform scale keeps the argmax: only rel-L2 sees it


def test_compare_reports_shape_nan_and_integer_mismatch():
    ref = np.ones((2, 3), np.float32)
    assert "shape" in compare_outputs([np.ones((3, 3), np.float32)], [ref], FP32, None)[0][0]
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert "NaN/Inf" in compare_outputs([bad], [ref], FP32, None)[0][0]
    ids = np.arange(1000)
    flipped = ids.copy()
    flipped[:5] += 1
    problems, figures = compare_outputs([flipped], [ids], FP32, None)
    assert figures[0]["int_match"] == pytest.approx(0.995) and "integer elements" in problems[0]


def test_topk_excludes_near_ties_from_top1():
    ref = np.array([[1.0, 0.9999999, -1], [0.0, 2.0, 1.0]])
    dev = np.array([[0.9999999, 1.0, -1], [0.0, 2.0, 1.0]])  # row 0 swaps a near-tie
    result = topk_agreement(dev, ref, axis=1, tie_margin=1e-3)
    assert result["top1"] == 1.0 and result["ties_excluded"] == 1
    result = topk_agreement(dev, ref, axis=1, tie_margin=0.0)
    assert result["top1"] == 0.5 and result["top1_disagreements"] == 1


# ---------------------------------------------------------------- config
VENDOR = """
[device]
options = { threads = 2 }
host_compute = false

[tolerances.fp16]
rel_l2 = 2e-2

[tolerances.fp16.ops]
"pd_op.softmax" = { rel_l2 = 5e-2, cosine = 0.99 }

[models.resnet18]
batch_range = [1, 8]
[models.resnet18.tolerances.fp16]
top1 = 0.95

[checks]
timeout = 30
unit_scale = [1e-3, 1e3]
"""


def test_vendor_config_layers_defaults_per_op_and_per_model(tmp_path):
    path = tmp_path / "vendor.toml"
    path.write_text(VENDOR)
    config = load_config(path)
    assert config.device_options == {"threads": 2} and config.host_compute is False
    assert config.checks.timeout == 30.0 and config.checks.unit_scale == (1e-3, 1e3)
    tol, sources = config.tolerance("fp16", "mobilenet_v2", ["pd_op.conv2d"])
    assert tol.rel_l2 == 2e-2 and tol.cosine == DEFAULT_TOLERANCES["fp16"].cosine and len(sources) == 2
    tol, sources = config.tolerance("fp16", "resnet18", ["pd_op.conv2d", "pd_op.softmax"])
    assert (tol.rel_l2, tol.cosine, tol.top1) == (5e-2, 0.99, 0.95)  # op loosens, model sets
    assert any("pd_op.softmax" in s for s in sources) and any("models.resnet18" in s for s in sources)
    # A per-op override never tightens the table.
    tight = load_config(_write(tmp_path, '[tolerances.fp32.ops]\n"pd_op.relu" = { rel_l2 = 1e-9 }\n'))
    assert tight.tolerance("fp32", "m", ["pd_op.relu"])[0].rel_l2 == FP32.rel_l2
    assert config.model("resnet18").batch_range == (1, 8)


def _write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("[tolerances.fp8]\nrel_l2 = 1\n", "unknown precision 'fp8'"),
    ("[tolerances.fp32]\nrel = 1\n", "unknown tolerance field 'rel'"),
    ("[checks]\ntimeoutt = 1\n", "unknown key(s) ['timeoutt']"),
    ("[models.a]\nbatch_range = [0, 2]\n", "batch_range"),
    ("[nonsense]\n", "unknown section"),
    ("not toml [", "not valid TOML"),
])
def test_vendor_config_errors_name_the_problem(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert needle in str(info.value)


def test_expected_failures_file(tmp_path):
    path = _write(tmp_path, "# npu:0\nresnet18/fp16/parity  # NPU-1234\n*/int8/*\n\n", "x.txt")
    expected = load_expected_failures(path)
    assert expected.match("resnet18/fp16/parity").reason == "NPU-1234"
    assert expected.match("mlp/int8/determinism").pattern == "*/int8/*"
    assert expected.match("resnet18/fp32/parity") is None
    with pytest.raises(ConfigError, match="x.txt:1"):
        load_expected_failures(_write(tmp_path, "resnet18 parity\n", "x.txt"))


def test_scopes():
    mandatory = [c.name for c in C.checks_for("mandatory")]
    assert "parity" in mandatory and "fallback_receipt" in mandatory and "lifecycle" not in mandatory
    # The fallback evidence runs in every scope (the verdict depends on it).
    assert {"fallback_utilization", "fallback_timing"} <= set(mandatory) and "concurrency" not in mandatory
    assert [c.name for c in C.checks_for("full", ["parity"])] == ["load", "parity"]
    with pytest.raises(ValueError, match="unknown check"):
        C.checks_for("full", ["speed"])


# ---------------------------------------------------------------- inputs
SPECS = [TensorSpec("x", (-1, 3, 8), "float32"), TensorSpec("ids", (-1, -1), "int64")]


@settings(max_examples=30, deadline=None)
@given(case=InputMaker(SPECS, (1, 5), input_settings={"ids": {"range": [0, 3]}}, dims=6).strategy())
def test_inputs_cover_the_batch_range_and_are_never_all_zero(case):
    maker = InputMaker(SPECS, (1, 5), input_settings={"ids": {"range": [0, 3]}}, dims=6)
    x, ids = maker.make(case)
    assert 1 <= case.batch <= 5
    assert x.shape == (case.batch, 3, 8) and x.dtype == np.float32 and np.any(x)
    assert ids.shape == (case.batch, 6) and ids.dtype == np.int64 and np.any(ids)
    assert ids.min() >= 0 and ids.max() <= 3
    assert all(np.array_equal(a, b) for a, b in zip(maker.make(case), (x, ids)))  # reproducible


def test_inputs_follow_the_sample_distribution_and_shape():
    def sampler(batch, seed):
        rng = np.random.default_rng(seed)
        return [rng.normal(5.0, 0.1, (batch, 3, 8)).astype(np.float32), rng.integers(10, 20, (batch, 7))]

    maker = InputMaker(SPECS, (1, 4), sampler)
    assert maker.distributions == ["sample", "normal", "uniform"]
    x, ids = maker.make(InputCase(3, "normal", 1))
    assert abs(float(x.mean()) - 5.0) < 0.1 and ids.shape == (3, 7)  # sequence length from the sample
    assert ids.min() >= 10 and ids.max() <= 19
    zeros = InputMaker([TensorSpec("ids", (-1, 4), "int64")], (1, 1), input_settings={"ids": {"range": [0, 0]}})
    assert np.any(zeros.make(InputCase(1, "uniform", 0))[0])  # a degenerate range still never gives all zeros


# ---------------------------------------------------------------- reports
def _result(check, status, expected=False, scope=None):
    r = CheckResult(f"m/fp32/{check}", "m", "fp32", check, scope or C.BY_NAME[check].scope, status,
                    message=f"{status} msg", evidence=["line one"], stderr_tail="Fatal Python error: Aborted\x07")
    r.outcome = _outcome(status, expected)
    r.expected_failure = "ticket" if expected else None
    return r


def test_summary_separates_ci_exit_code_from_conformance():
    results = [_result("load", "passed"), _result("parity", "failed", expected=True),
               _result("lifecycle", "skipped")]
    summary = summarize(results)
    assert summary["unexpected_failures"] == [] and summary["expected_failures"] == ["m/fp32/parity"]
    assert summary["conformant"] is False  # a mandatory check failed, even if expected
    assert summary["verdict"] == "not_conformant"
    assert summary["verdict_detail"]["failed_mandatory"] == {"m/fp32/parity": "failed (expected failure)"}
    results[1] = _result("parity", "crashed")
    assert summarize(results)["unexpected_failures"] == ["m/fp32/parity"]


def _all_mandatory(**statuses):
    return [_result(name, statuses.get(name, "passed")) for name in C.MANDATORY_CHECKS]


def test_verdict_conformant_only_with_every_mandatory_check_run_and_passed():
    assert summarize(_all_mandatory())["verdict"] == "conformant"
    assert summarize(_all_mandatory())["conformant"] is True
    # A subset (--checks load,parity): incomplete, never conformant, and the missing checks are named.
    subset = summarize([_result("load", "passed"), _result("parity", "passed")])
    assert subset["verdict"] == "incomplete" and subset["conformant"] is False
    assert "m/fp32/fallback_receipt" in subset["missing_mandatory"]
    assert subset["mandatory"]["total"] == len(C.MANDATORY_CHECKS) and subset["mandatory"]["passed"] == 2
    # Skipped (an unsupported precision) and blocked mandatory checks are missing too.
    for status in ("skipped", "blocked"):
        summary = summarize(_all_mandatory(determinism=status))
        assert summary["verdict"] == "incomplete", status
        assert summary["verdict_detail"]["missing_mandatory"]["m/fp32/determinism"].startswith(status)
    # A planned case that produced nothing (interrupted run) is missing as a whole.
    summary = summarize(_all_mandatory(), cases=[("m", "fp32"), ("m", "fp16")])
    assert summary["verdict"] == "incomplete" and len(summary["missing_mandatory"]) == len(C.MANDATORY_CHECKS)
    assert summarize([], cases=[])["verdict"] == "incomplete"


def test_verdict_fallback_evidence_of_any_scope_decides():
    for check in ("fallback_utilization", "fallback_timing"):
        summary = summarize(_all_mandatory() + [_result(check, "failed")])
        assert summary["verdict"] == "not_conformant", check
        assert summary["verdict_detail"]["failed_evidence"] == {f"m/fp32/{check}": "failed"}
        line = summary["lines"][0]
        assert line == f"NOT CONFORMANT: fallback evidence failed: m/fp32/{check} failed"
        assert "100%" not in " ".join(summary["lines"])
    # Skipped evidence (no sampler) does not decide; other full-scope failures set the exit code, not the verdict.
    summary = summarize(_all_mandatory() + [_result("fallback_utilization", "skipped"), _result("lifecycle", "failed")])
    assert summary["verdict"] == "conformant" and summary["unexpected_failures"] == ["m/fp32/lifecycle"]
    assert any("m/fp32/lifecycle failed" in line for line in summary["lines"])
    assert summary["lines"][-1] == "checks: 7 passed, 1 failed, 1 skipped"  # in words, not a dict


def test_summary_lines_name_what_failed_and_never_pair_not_conformant_with_100_percent():
    summary = summarize(_all_mandatory(fallback_receipt="failed"))
    assert summary["lines"][0] == "NOT CONFORMANT: mandatory check(s) failed: m/fp32/fallback_receipt failed"
    incomplete = summarize([_result("load", "passed"), _result("reference", "passed"), _result("parity", "passed")])
    assert incomplete["lines"][0].startswith("INCOMPLETE (not conformant): 4 of 7 mandatory check(s)")
    assert ("fallback_receipt, determinism, bad_input, perf_accuracy for m/fp32 (not selected (--checks))"
            in incomplete["lines"][0])


LONG = ("silent fallback: requested npu:0 but the paddle-inference runtime runs on cpu:0; op pd_op.matmul x12 on"
        " cpu:0 (no kernel on the device); op pd_op.relu x12 on cpu:0 (forced off the device by configuration);"
        " the end of this message must be printed too: THE-LAST-WORDS")


def _report(results, checks_run=None):
    return {"device": {"id": "npu:0"}, "requested_device": "npu:0", "checks": [r.to_dict() for r in results],
            "checks_run": checks_run or [c.name for c in C.CHECKS], "plugin": {"name": "acme-npu-plugin",
            "version": "1.2.3"}, "summary": summarize(results), "error": None,
            "host_compute": {"value": False, "source": "Device.host_compute declared by acme-npu-plugin"}}


@pytest.mark.parametrize("width", [80, 120])
def test_console_summary_is_never_cut(width, monkeypatch):
    import io

    from rich.console import Console

    from hwdeploy_conformance.report import _SHORT, print_summary

    monkeypatch.setenv("COLUMNS", str(width))
    results = _all_mandatory(fallback_receipt="failed") + [_result(n, "passed") for n in
                                                            ("fallback_utilization", "fallback_timing", "concurrency",
                                                             "lifecycle")]
    results[3].message = LONG
    results[3].evidence = ["x" * 30 + "; " + "detail " * 120]
    out = io.StringIO()
    console = Console(file=out, color_system=None)  # the width comes from COLUMNS, as in a terminal
    assert console.width == width
    print_summary(_report(results), console)
    text = out.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "\u2026" not in text and "..." not in text.replace("[... ", "")  # no ellipsis anywhere
    flat = " ".join(" ".join(lines).split())
    assert " ".join(LONG.split()) in flat  # the whole message, wrapped, not cut
    assert "more characters in the report]" in flat  # an over-long evidence line says it was shortened...
    assert "detail detail" in flat and "deta " not in flat + " "  # ...at a word boundary
    # Every check's header is whole: either as a column of the table or as a row (narrow consoles).
    for name in C.BY_NAME:
        short = _SHORT.get(name, name)
        assert any(short in line.split() or name in line.split() or f"│{short}│" in line.replace(" ", "")
                   or f"│{name}│" in line.replace(" ", "") for line in lines), (name, text)
    assert "hwdeploy conformance: npu:0 (acme-npu-plugin 1.2.3)" in text
    assert "host_compute: no (Device.host_compute declared by acme-npu-plugin)" in text


def test_clip_cuts_at_a_clause_boundary():
    from hwdeploy_conformance.report import clip

    assert clip("short") == "short"
    text = "; ".join(f"clause {i} with words" for i in range(60))
    clipped = clip(text, 100)
    assert clipped.startswith("clause 0 with words; clause 1") and "more characters in the report]" in clipped
    assert clipped.split(" [...")[0].endswith("with words")


def test_theil_sen_ignores_swings_and_finds_leaks():
    from hwdeploy_conformance.trend import theil_sen

    rng = np.random.default_rng(3)
    flat = theil_sen([326.7] * 20)
    assert (flat.slope, flat.lower, flat.upper) == (0.0, 0.0, 0.0)
    # The review's honest plugin: RSS swinging between ~666 and ~775 MiB over 17 cycles.
    swings = [0 for _ in range(200)]
    for k in range(200):
        t = theil_sen(666 + rng.uniform(0, 109, 17))
        swings[k] = t.lower > 1.0
    assert sum(swings) == 0
    leak = theil_sen(666 + 4.0 * np.arange(17) + rng.uniform(0, 20, 17))
    assert leak.slope == pytest.approx(4.0, abs=1.0) and leak.lower > 1.0
    # One outlier does not move it (a mean would).
    spike = theil_sen([100.0] * 10 + [900.0] + [100.0] * 10)
    assert spike.slope == 0.0
    assert theil_sen([5.0, 6.0]).lower == -np.inf  # too few points to bound the slope


def test_junit_maps_statuses(tmp_path):
    results = [_result("load", "passed"), _result("parity", "failed"), _result("determinism", "crashed"),
               _result("bad_input", "failed", expected=True), _result("lifecycle", "blocked")]
    report = {"device": {"id": "npu:0"}, "requested_device": "npu:0", "checks": [r.to_dict() for r in results],
              "created": "now", "host": {"hostname": "lab1"}, "duration_s": 1.0, "scope": "full",
              "summary": summarize(results), "plugin": {"name": "acme", "version": "1"}, "versions": {"x": "1"}}
    write_junit(report, tmp_path / "j.xml")
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    counts = [suite.get(key) for key in ("tests", "failures", "errors", "skipped")]
    assert counts == ["5", "1", "1", "2"]
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["determinism"].find("error").get("type") == "crashed"
    assert "Fatal Python error" in cases["determinism"].find("error").text  # control char stripped, text kept
    assert "expected failure (ticket)" in cases["bad_input"].find("skipped").get("message")


def test_crash_evidence_picks_fatal_lines_and_innermost_frames():
    tail = "\n".join(["noise"] * 5 + [
        "terminate called after throwing an instance of 'X'", "  what():  (NotFound) No allocator found",
        "Fatal Python error: Aborted", "", "Current thread 0x1 (most recent call first):",
        '  File "/site/hwdeploy_acme.py", line 9 in create', '  File "/x/api.py", line 1 in predictor'])
    evidence = crash_evidence(tail)
    assert evidence[:3] == ["terminate called after throwing an instance of 'X'",
                            "what():  (NotFound) No allocator found", "Fatal Python error: Aborted"]
    assert 'File "/site/hwdeploy_acme.py", line 9 in create' in evidence


def test_progress_reader_waits_for_complete_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"event": "begin", "check": "parity"}\n{"event": "res')
    reader = _LineReader(path)
    assert reader.read() == [{"event": "begin", "check": "parity"}]
    with open(path, "a") as fh:
        fh.write('ult", "check": "parity"}\n')
    assert reader.read() == [{"event": "result", "check": "parity"}]
