"""The safety net: a legacy model's first load on a machine happens in a child process (issue 12)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import hwdeploy
from hwdeploy.errors import ModelFormatError
from hwdeploy.sdk import isolation, safety_net

TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def models():
    from hwdeploy import zoo

    z = zoo.get("mlp")
    return z.model, z.legacy


@pytest.fixture
def net(tmp_path, monkeypatch):
    """A private cache and an empty in-process verdict memo; children can import the tests' helpers."""
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("HWDEPLOY_SAFETY_NET", raising=False)
    monkeypatch.setattr(safety_net, "_verdicts", {})
    calls = []
    real = isolation.run_probe

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(isolation, "run_probe", counting)
    return calls


def _verdict_file(model) -> Path:
    return safety_net.verdict_path(safety_net.verdict_key(model, True, True))


def test_first_load_runs_a_child_once_and_caches_an_ok_verdict(net, models, monkeypatch):
    _, legacy = models
    verdict = safety_net.check(legacy)
    assert verdict["ok"] and verdict["stage"] == "done" and net == ["hwdeploy.sdk.safety_net:child"]
    stored = json.loads(json.loads(_verdict_file(legacy).read_text())["text"])
    assert stored["ok"] is True
    monkeypatch.setattr(safety_net, "_verdicts", {})  # a new process: the verdict comes from the file
    assert safety_net.check(legacy)["ok"] and len(net) == 1


def test_a_child_killed_by_a_signal_is_a_model_format_error_naming_signal_and_stage(net, models, monkeypatch):
    _, legacy = models
    monkeypatch.setenv("HWDEPLOY_SAFETY_NET_CHILD", "fault_children:segv_at_load")
    with pytest.raises(ModelFormatError, match=r"killed by SIGSEGV at stage 'load'") as info:
        safety_net.check(legacy)
    assert info.value.path == legacy.program and str(legacy.program) in str(info.value)
    # The verdict is cached: a later process refuses the model without starting a child.
    monkeypatch.delenv("HWDEPLOY_SAFETY_NET_CHILD")
    monkeypatch.setattr(safety_net, "_verdicts", {})
    with pytest.raises(ModelFormatError, match="SIGSEGV"):
        safety_net.check(legacy)
    assert len(net) == 1


def test_an_abort_at_run_names_sigabrt_and_the_run_stage(net, models, monkeypatch):
    _, legacy = models
    monkeypatch.setenv("HWDEPLOY_SAFETY_NET_CHILD", "fault_children:abort_at_run")
    with pytest.raises(ModelFormatError, match=r"killed by SIGABRT at stage 'run'"):
        hwdeploy.predictor(legacy, device="cpu", threads=1)  # through create_paddle_predictor


def test_a_hang_is_refused_but_not_cached(net, models, monkeypatch):
    _, legacy = models
    monkeypatch.setenv("HWDEPLOY_SAFETY_NET_CHILD", "fault_children:hang_at_load")
    monkeypatch.setenv("HWDEPLOY_SAFETY_NET_TIMEOUT", "3")
    with pytest.raises(ModelFormatError, match=r"hung at stage 'load' \(no answer in 3s\)"):
        safety_net.check(legacy)
    assert not _verdict_file(legacy).exists()


def test_a_damaged_verdict_file_is_probed_again(net, models, monkeypatch):
    _, legacy = models
    safety_net.check(legacy)
    path = _verdict_file(legacy)
    path.write_text(path.read_text().replace("true", "false"))  # hash no longer matches
    monkeypatch.setattr(safety_net, "_verdicts", {})
    assert safety_net.check(legacy)["ok"] and len(net) == 2


def test_pir_programs_and_a_disabled_net_start_no_child(net, models, monkeypatch):
    pir, legacy = models
    assert safety_net.check(pir) == {"ok": True, "skipped": True}
    monkeypatch.setenv("HWDEPLOY_SAFETY_NET", "0")
    assert safety_net.check(legacy)["skipped"] and net == []
