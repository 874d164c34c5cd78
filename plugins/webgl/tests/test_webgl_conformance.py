"""`hwdeploy conformance --device webgl`: reports the renderer, parity, and the software renderer as fallback."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("hwdeploy_conformance", reason="the conformance suite (conformance/) is not installed")
pytestmark = pytest.mark.slow


def _conformance(tmp_path, *extra):
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "hwdeploy", "conformance", "--device", "webgl", "--models", "zoo:mlp",
           "--scope", "mandatory", "--no-progress", "--report", str(report), *extra]
    # SwiftShader even where there is a GPU, so the software-renderer verdict is what this test expects
    env = dict(os.environ, HWDEPLOY_CHROMIUM_ARGS="--use-angle=swiftshader")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert report.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(report.read_text())
    return proc, data, {c["check"]: c for c in data["checks"]}


def test_conformance_flags_the_software_renderer(webgl_ready, tmp_path):
    proc, report, checks = _conformance(tmp_path)
    assert proc.returncode == 1 and report["summary"]["conformant"] is False
    assert report["device"]["id"] == "webgl:0"
    renderer = report["device"]["details"]["renderer"]
    assert renderer and report["device"]["details"]["software_renderer"] is True
    assert checks["parity"]["status"] == "passed"
    fallback = checks["fallback_receipt"]
    assert fallback["status"] == "failed" and "software rasterizer" in fallback["message"]
    assert renderer in fallback["message"]
    assert report["summary"]["unexpected_failures"] == ["mlp/fp32/fallback_receipt"]


def test_conformance_with_software_rendering_accepted(webgl_ready, tmp_path):
    config = tmp_path / "webgl.toml"
    config.write_text("[device]\noptions = { allow_software_renderer = true }\n")
    proc, report, checks = _conformance(tmp_path, "--config", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["summary"]["conformant"] is True
    assert checks["fallback_receipt"]["status"] == "passed" and checks["parity"]["status"] == "passed"
