"""``hwdeploy conformance coverage``: the model x backend matrix, on real backends (ONNX Runtime here)."""

from __future__ import annotations

import json

import pytest

from hwdeploy.sdk import testing

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    from hwdeploy_conformance.cli import main

    root = tmp_path_factory.mktemp("coverage")
    unmapped = testing.build_onnx_unconvertible(root / "models")["unmapped"]
    out, md = root / "coverage.json", root / "coverage.md"
    code = main(["coverage", "--models", "zoo:mlp", "zoo:tiny_detector", str(unmapped), "--backends", "onnxruntime",
                 "--jobs", "2", "--out", str(out), "--markdown", str(md)])
    assert code == 0
    return json.loads(out.read_text()), md.read_text(), str(unmapped)


def test_the_reference_comes_first_and_only_the_asked_backends_follow(matrix):
    data, _md, _unmapped = matrix
    assert [c["name"] for c in data["columns"]] == ["cpu/paddle-inference", "cpu/onnxruntime"]
    assert data["columns"][0]["reference"] and not data["columns"][1]["reference"]
    assert all(row["cpu/paddle-inference"] == {"status": "reference"} for row in data["cells"].values())


def test_a_model_that_runs_gets_its_parity_figure_judged_as_the_suite_judges(matrix):
    data, md, _unmapped = matrix
    mlp = data["cells"]["zoo:mlp"]["cpu/onnxruntime"]
    assert mlp["status"] == "parity" and mlp["fallback"] == []
    assert mlp["figure"] == "identical" or float(mlp["figure"].removeprefix("rel. L2 ")) <= 1e-4
    # NMS outputs are matched as boxes, not element by element (their order and count may legitimately differ).
    detector = data["cells"]["zoo:tiny_detector"]["cpu/onnxruntime"]
    assert detector["status"] == "parity" and detector["figure"].startswith("boxes: score ")
    assert "| mlp | reference | ✓ " in md


def test_a_refusal_names_every_op_it_stops_on(matrix):
    data, md, unmapped = matrix
    cell = data["cells"][unmapped]["cpu/onnxruntime"]
    assert cell["status"] == "refused" and cell["ops"] == testing.ONNX_UNMAPPED_OPS
    assert cell["error"].startswith("UnsupportedOpsError: paddle2onnx")
    assert "refused: pd_op.det, pd_op.inverse" in md
    assert "2 of 3 cells run with parity" in md


def test_a_wrong_backend_is_a_mismatch_not_a_pass(monkeypatch):
    """A backend whose numbers are off is reported as a mismatch with the problem (the comparison is real)."""
    from hwdeploy_conformance import coverage
    import hwdeploy

    column = next(c for c in coverage.columns(["onnxruntime"]) if c["backend"] == "onnxruntime")
    real_predictor = hwdeploy.predictor

    def skewed(model, device=None, **options):
        p = real_predictor(model, device, **options)
        if options.get("backend") == "onnxruntime":
            run = p.run
            p.run = lambda *a, **k: [o * 1.01 for o in run(*a, **k)]
        return p

    monkeypatch.setattr(hwdeploy, "predictor", skewed)
    cell = coverage.column_in_child(column, ["zoo:mlp"])["zoo:mlp"]
    assert cell["status"] == "mismatch" and any("relative L2 error" in p for p in cell["problems"])


def test_an_unknown_backend_is_refused_naming_what_is_available(capsys):
    from hwdeploy_conformance.cli import main

    assert main(["coverage", "--models", "zoo:mlp", "--backends", "onnxruntime,cpu/no-such-backend"]) == 2
    err = capsys.readouterr().err
    assert "'cpu/no-such-backend'" in err and "cpu/onnxruntime" in err and "cpu/paddle-inference" in err
    assert "'onnxruntime'" not in err  # the known one is not blamed


def test_a_column_can_be_named_kind_slash_backend():
    from hwdeploy_conformance.coverage import columns

    assert [c["name"] for c in columns(["cpu/onnxruntime"])] == ["cpu/paddle-inference", "cpu/onnxruntime"]


def test_a_fallback_cell_names_the_ops_and_counts_the_other_reasons():
    from hwdeploy_conformance.coverage import markdown

    reasons = ["6 op(s) ran off webgl:0: pd_op.divide (host stage: reads a second input or an NMS output),"
               " pd_op.multiclass_nms3 (host stage: Paddle.js has no NMS kernel)",
               "the WebGL renderer is a software rasterizer (ANGLE (Google, Vulkan (SwiftShader Device)))"]
    cell = {"status": "parity", "figure": "boxes: score 2.1e-07", "fallback": reasons}
    matrix = {"models": ["zoo:m"], "columns": [{"name": "webgl/paddle.js-webgl"}],
              "cells": {"zoo:m": {"webgl/paddle.js-webgl": cell}}, "seed": 7, "batch": 1}
    row = markdown(matrix).splitlines()[2]
    assert "(fallback: 6 op(s) ran off webgl:0: pd_op.divide, pd_op.multiclass_nms3; +1 more)" in row, row
    cell["fallback"] = reasons[1:] + ["the shaders run on the CPU: not a GPU"]
    row = markdown(matrix).splitlines()[2]
    assert "(fallback: the WebGL renderer is a software rasterizer; +1 more)" in row, row


def test_a_device_kind_picks_every_backend_of_that_kind():
    """``--backends webgl`` is what a person types: a kind names each of its backends (the reference stays first)."""
    from hwdeploy_conformance import coverage

    names = [c["name"] for c in coverage.columns(["cpu"])]
    assert names[0] == "cpu/paddle-inference" and "cpu/onnxruntime" in names and "cpu/openvino" in names
    assert [c["name"] for c in coverage.columns(["onnxruntime"])] == ["cpu/paddle-inference", "cpu/onnxruntime"]
