"""``hwdeploy conformance`` on the simulated device (Cambricon plugin): it reports the fallback, with evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "simdevice"))
import simdevice_testkit as kit  # noqa: E402

pytest.importorskip("hwdeploy_conformance", reason="the conformance suite (pip install -e conformance) is not installed")

KIND = "mlu"
DEVICE = "mlu:0"
PLUGIN = "cambricon"

pytestmark = pytest.mark.slow


def conformance(tmp_path: Path, models: list[str], root: Path) -> tuple[int, dict]:
    report = tmp_path / f"report-{len(models)}.json"
    cmd = [sys.executable, "-m", "hwdeploy", "conformance", "--device", DEVICE, "--models", *models,
           "--scope", "mandatory", "--checks", "parity,fallback_receipt", "--examples", "2", "--no-progress",
           "--report", str(report)]
    env = dict(os.environ, CUSTOM_DEVICE_ROOT=str(root), OMP_NUM_THREADS="1")
    env.pop("CUSTOM_DEVICE_BLACK_LIST", None)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert report.exists(), done.stdout + done.stderr
    return done.returncode, json.loads(report.read_text())


def test_cambricon_conformance_reports_the_fallback_with_evidence_and_passes_supported_models(tmp_path):
    root = kit.sim_root(KIND)
    softmax_mlp = str(kit.tiny_models() / "mlp_softmax")
    code, report = conformance(tmp_path, ["zoo:mlp", softmax_mlp], root)
    assert code != 0 and report["summary"]["conformant"] is False
    assert report["plugin"]["name"] == PLUGIN and report["device"]["id"] == DEVICE
    checks = {c["id"]: c for c in report["checks"]}
    failed = checks["mlp_softmax/fp32/fallback_receipt"]
    assert failed["status"] == "failed" and "softmax" in failed["message"]
    assert failed["figures"]["off_device_ops_by_reason"] == {"no kernel on the device": ["softmax x1 on cpu:0"]}
    assert any("kernel program" in e for e in failed["figures"]["evidence"])
    assert checks["mlp_softmax/fp32/parity"]["status"] == "passed"  # right numbers, wrong place
    assert checks["mlp/fp32/fallback_receipt"]["status"] == "passed"

    # Only supported ops: conformant.
    code, report = conformance(tmp_path, ["zoo:mlp"], root)
    assert code == 0 and report["summary"]["conformant"] is True, report["summary"]
