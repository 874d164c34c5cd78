"""The fault suite (issue 12): generated hostile cases, each in a child process (see ``fault_campaign.py``).

- ``test_quick_slice``: ~150 cases in the core suite (< 3 min on 2 cores).
- ``test_large_campaign``: >= 1,000 cases, only with ``-m campaign``::

      pytest -m campaign tests/test_fault_campaign.py        # writes fault-campaign.json (or $HWDEPLOY_CAMPAIGN_OUT)

Both fail on any signal, hang, untyped exception or silently wrong answer, listing them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fault_campaign  # noqa: E402

SCRIPT = Path(__file__).with_name("fault_campaign.py")
ROOT = Path(__file__).resolve().parents[1]


def _crash():
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang():
    time.sleep(60)


def _untyped():
    raise KeyError("boom")


def _typed():
    from hwdeploy.errors import InputError

    raise InputError("bad input")


def test_the_harness_observes_signals_hangs_and_exceptions():
    """The campaign can only report zero crashes if it would see one."""
    assert fault_campaign.run_forked(_crash, 10) | {"seconds": 0} == {"outcome": "signal", "signal": "SIGSEGV",
                                                                      "seconds": 0}
    hang = fault_campaign.run_forked(_hang, 1.0)
    assert hang["outcome"] == "hang" and hang["seconds"] < 5
    assert fault_campaign.run_forked(_untyped, 10)["error"] == "KeyError"
    assert fault_campaign.run_forked(_typed, 10)["outcome"] == "typed"
    assert fault_campaign.run_forked(lambda: {"outcome": "ok", "x": 1}, 10)["x"] == 1


def _run(args: list[str], out: Path, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _assert_clean(summary: dict) -> None:
    bad = {k: summary["outcomes"][k] for k in fault_campaign.BAD}
    findings = "\n".join(f"  {f['outcome']}: {f['class']}: {f['description']} {f.get('error', '')}"
                         f" {f.get('message', '')}{f.get('signal', '')}" for f in summary["findings"][:40])
    assert not any(bad.values()), f"{bad}\n{findings}"


def test_quick_slice(tmp_path):
    summary = _run(["--quick"], tmp_path / "quick.json", timeout=600)
    assert summary["cases"] >= 100
    classes = {"/".join(c.split("/")[:2]) for c in summary["by_class"]}
    caches = {f"cache/{target}" for target in fault_campaign.cache_targets()}  # onnx: where paddle2onnx is
    assert {"model/legacy", "model/pir", "call/device", "call/option", "call/path", "cache/zoo", "cache/verdict",
            "cache/probe", "shared/one-predictor", "shared/clones", "cli"} | caches <= classes
    assert {"input/good", "input/object"} <= {c for c in summary["by_class"]}
    _assert_clean(summary)


@pytest.mark.campaign
def test_large_campaign(request):
    if "campaign" not in (request.config.getoption("-m") or ""):
        pytest.skip("the large campaign runs only with -m campaign")
    out = Path(os.environ.get("HWDEPLOY_CAMPAIGN_OUT", ROOT / "fault-campaign.json"))
    summary = _run(["--cases", os.environ.get("HWDEPLOY_CAMPAIGN_CASES", "1200")], out, timeout=3 * 3600)
    assert summary["cases"] >= 1000
    families = {c.split("/")[0] for c in summary["by_class"]}
    assert families == {"model", "input", "call", "cache", "shared", "cli"}, families
    _assert_clean(summary)
