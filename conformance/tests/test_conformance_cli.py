"""The entry points as a lab uses them: ``hwdeploy conformance`` (a subcommand contributed through the
``hwdeploy`` entry point), ``python -m hwdeploy_conformance`` and ``pytest --hwdeploy-device``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPTS = Path(sys.executable).parent


def run(args, cwd, timeout=600):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def test_hwdeploy_conformance_subcommand(fault_env, models, tmp_path):
    report, junit = tmp_path / "out.json", tmp_path / "out.xml"
    proc = run([sys.executable, "-m", "hwdeploy", "conformance", "--device", "cpu", "--models", str(models["mlp"]),
                "--config", str(fault_env["config"]), "--precision", "fp32,fp16", "--scope", "mandatory",
                "--report", str(report), "--junit", str(junit), "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["schema"] == "hwdeploy-conformance-report" and data["version"] == 1
    # --scope mandatory: the mandatory checks and the fallback evidence (which decides the verdict in every scope).
    assert data["checks_run"] == [c.name for c in __import__("hwdeploy_conformance").CHECKS
                                  if c.scope == "mandatory" or c.evidence]
    # fp16 was asked for and could not be checked: the run is incomplete, not conformant, and says so.
    assert data["summary"]["verdict"] == "incomplete" and data["summary"]["conformant"] is False
    assert {i for i in data["summary"]["missing_mandatory"] if "/fp16/" in i} == {
        f"mlp/fp16/{c.name}" for c in __import__("hwdeploy_conformance").CHECKS if c.scope == "mandatory"}
    assert "INCOMPLETE (not conformant): 7 of 14 mandatory check(s)" in proc.stdout
    assert "NOT CONFORMANT" not in proc.stdout
    by_id = {c["id"]: c for c in data["checks"]}
    assert by_id["mlp/fp32/parity"]["status"] == "passed"
    # The CPU backend refuses fp16: the precision is skipped with the plugin's reason, not failed.
    load16 = by_id["mlp/fp16/load"]
    assert load16["status"] == "skipped" and "does not support fp16" in load16["message"]
    assert {c["status"] for c in data["checks"] if c["precision"] == "fp16"} == {"skipped"}
    assert data["versions"]["paddlepaddle"] and data["plugin"]["name"] == "cpu"
    assert data["command"][:2] == ["hwdeploy", "conformance"] or "conformance" in data["command"]
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"


def test_unknown_device_exits_2_and_still_writes_the_report(fault_env, models, tmp_path):
    report, junit = tmp_path / "out.json", tmp_path / "out.xml"
    proc = run([str(SCRIPTS / "hwdeploy"), "conformance", "--device", "npu:7", "--models", str(models["mlp"]),
                "--report", str(report), "--junit", str(junit), "--no-progress"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["exit_code"] == 2 and "npu" in data["error"] and data["checks"] == []
    assert ET.parse(junit).getroot().find("testsuite").get("errors") == "1"
    bad = run([str(SCRIPTS / "hwdeploy-conformance"), "--device", "cpu", "--precision", "fp8"], tmp_path)
    assert bad.returncode == 2 and "unknown precision 'fp8'" in bad.stderr


def test_unexpected_failure_gives_nonzero_exit(fault_env, models, tmp_path):
    report = tmp_path / "drift.json"
    proc = run([sys.executable, "-m", "hwdeploy_conformance", "--device", "faultdrift", "--models",
                str(models["mlp"]), "--config", str(fault_env["config"]), "--checks", "parity", "--report",
                str(report), "--no-progress"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "mlp/fp32/parity failed" in proc.stdout and "relative L2 error" in proc.stdout
    assert json.loads(report.read_text())["summary"]["unexpected_failures"] == ["mlp/fp32/parity"]


def test_pytest_plugin_turns_checks_into_items(fault_env, models, tmp_path):
    expected = tmp_path / "expected.txt"
    expected.write_text("mlp/fp32/determinism  # pretend it is known\n")
    report, junit = tmp_path / "pt.json", tmp_path / "pt.xml"
    proc = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--hwdeploy-device", "faultdrift",
                "--hwdeploy-models", str(models["mlp"]), "--hwdeploy-config", str(fault_env["config"]),
                "--hwdeploy-checks", "parity,determinism", "--hwdeploy-expected-failures", str(expected),
                "--hwdeploy-report", str(report), f"--junitxml={junit}"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    lines = out.splitlines()
    assert any(l.startswith("FAILED") and "conformance[mlp/fp32/parity]" in l for l in lines), out
    assert any(l.startswith("PASSED") and "conformance[mlp/fp32/load]" in l for l in lines), out
    assert "relative L2 error" in out
    # determinism passes although listed as expected to fail: an unexpected pass (XPASS) is reported as a pass.
    assert any(l.startswith("PASSED") and "conformance[mlp/fp32/determinism]" in l for l in lines), out
    data = json.loads(report.read_text())
    assert {c["id"]: c["outcome"] for c in data["checks"]} == {
        "mlp/fp32/load": "pass", "mlp/fp32/parity": "fail", "mlp/fp32/determinism": "xpass"}
    assert data["summary"]["unexpected_passes"] == ["mlp/fp32/determinism"]
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "1"


def test_several_devices_run_in_parallel_with_one_report_each(fault_env, models, tmp_path):
    """--device cpu,faultnondet,npu:7 --jobs 2: three independent runs, two at a time, one report (and JUnit
    file and log) per device; the exit status is the worst of them (npu:7 does not exist here: 2)."""
    report, junit = tmp_path / "lab" / "run.json", tmp_path / "lab" / "run.xml"
    proc = run([sys.executable, "-m", "hwdeploy", "conformance", "--device", "cpu,faultnondet,npu:7", "--jobs", "2",
                "--models", str(models["mlp"]), "--config", str(fault_env["config"]),
                "--checks", "reference,parity,determinism", "--report", str(report), "--junit", str(junit)],
               tmp_path, timeout=900)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    reports = {d: json.loads((tmp_path / "lab" / f"run.{stem}.json").read_text())
               for d, stem in (("cpu", "cpu"), ("faultnondet", "faultnondet"), ("npu:7", "npu_7"))}
    for device, data in reports.items():
        assert data["requested_device"] == device
        assert (tmp_path / "lab" / f"run.{device.replace(':', '_')}.xml").exists()
        assert (tmp_path / "lab" / f"run.{device.replace(':', '_')}.log").read_text().strip()
    assert [reports[d]["exit_code"] for d in ("cpu", "faultnondet", "npu:7")] == [0, 1, 2]
    by_id = {c["id"]: c for c in reports["faultnondet"]["checks"]}
    assert by_id["mlp/fp32/determinism"]["status"] == "failed"
    assert reports["cpu"]["summary"]["verdict"] == "incomplete"  # a subset of the checks is never conformant
    # Two at a time: the first two overlapped, the third began only once one of them had finished.
    spans = {d: (time.mktime(time.strptime(r["created"], "%Y-%m-%dT%H:%M:%S%z")), r["duration_s"])
             for d, r in reports.items()}
    (a0, ad), (b0, bd), (c0, _) = spans["cpu"], spans["faultnondet"], spans["npu:7"]
    assert max(a0, b0) <= min(a0 + ad, b0 + bd) + 1, spans
    assert c0 >= min(a0 + ad, b0 + bd) - 1, spans
    for device in ("cpu", "faultnondet", "npu:7"):
        assert f"{device}: " in proc.stdout and "report: " in proc.stdout
    assert "3 devices, 2 at a time" in proc.stdout


def test_parallel_runs_refuse_a_device_named_twice(tmp_path):
    proc = run([str(SCRIPTS / "hwdeploy"), "conformance", "--device", "cpu,cpu", "--report",
                str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 2 and "cpu more than once" in proc.stderr
    proc = run([str(SCRIPTS / "hwdeploy"), "conformance", "--device", "cpu", "--jobs", "0"], tmp_path)
    assert proc.returncode == 2 and "--jobs must be at least 1" in proc.stderr
    assert not list(tmp_path.glob("*.json"))
