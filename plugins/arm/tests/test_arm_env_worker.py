"""The Lite environment (discovery, set-up, CLI) and the worker process (persistence, tensors, crashes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hwdeploy
from hwdeploy.errors import BackendError
from hwdeploy_arm import env
from hwdeploy_arm.worker import LiteWorker, LiteWorkerError, WORKER_SCRIPT


def test_env_var_takes_precedence(monkeypatch, tmp_path):
    fake = tmp_path / "python3.10"
    monkeypatch.setenv(env.ENV_VAR, str(fake))
    found = env.find_lite_python()
    assert found == env.LitePython(str(fake), "env")
    assert f"${env.ENV_VAR}={fake} does not exist" in env.missing_reason()


def test_missing_runtime_is_reported_with_the_fix(monkeypatch, tmp_path):
    """No env var, an empty cache, no pyenv: the devices say why and how to fix it."""
    monkeypatch.delenv(env.ENV_VAR, raising=False)
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(env, "_candidate_pythons", lambda: [])
    assert env.find_lite_python() is None
    from hwdeploy_arm import plugin

    devices = {d.kind: d for d in plugin.hwdeploy_discover_devices()}
    lite_cpu = devices["cpu"]
    assert not lite_cpu.available and lite_cpu.backend == "paddle-lite"
    assert "hwdeploy lite-setup" in lite_cpu.reason and env.ENV_VAR in lite_cpu.reason
    assert not devices["arm"].available and "not an ARM CPU" in devices["arm"].reason


def test_setup_is_idempotent_and_reports_versions(lite_python):
    if env.find_lite_python().source != "managed":
        pytest.skip(f"{env.ENV_VAR} points at another interpreter")
    again = env.setup_lite_env()  # already there: returns at once, no pip
    assert str(again) == lite_python
    info = env.env_info()
    assert info["lite"] == "v2.13-rc" and info["python"].startswith("3.10")
    out = subprocess.run([lite_python, "-c", "import paddlelite.lite, numpy; print(numpy.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("1.")  # numpy<2, as the wheel needs


def test_lite_setup_cli(lite_python):
    hwdeploy_cli = Path(sys.executable).with_name("hwdeploy")
    proc = subprocess.run([str(hwdeploy_cli), "lite-setup", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert Path(result["interpreter"]).exists() and result["lite"] == "v2.13-rc"
    assert result["active"] == lite_python


def test_lite_cpu_device_is_discovered(lite_python):
    lite = [d for d in hwdeploy.devices(refresh=True) if d.backend == "paddle-lite"]
    cpu = next(d for d in lite if d.kind == "cpu")
    assert cpu.available, cpu.reason
    assert cpu.priority < 0  # never preferred by plain "auto" over the Paddle Inference reference
    assert cpu.versions["paddlelite"] == "v2.13-rc" and cpu.details["runtime"]["machine"] == "x86_64"
    assert cpu.details["runtime"]["nnadapter"] is False  # the PyPI wheel has no NNAdapter


@pytest.fixture
def worker(lite_python):
    with LiteWorker(lite_python, threads=1, name="lite-test") as w:
        yield w


@pytest.fixture(scope="module")
def mlp_nb(lite_x86_nb, tmp_path_factory) -> Path:
    """The zoo MLP as an x86 .nb, copied away from its report (so nothing validates its inputs)."""
    artifact, _ = lite_x86_nb("mlp")
    path = tmp_path_factory.mktemp("mlp-nb") / "mlp.nb"
    shutil.copyfile(artifact.path("model.nb"), path)
    return path


def test_worker_stays_up_and_passes_tensors_through_shared_memory(worker, mlp_nb, zoo_model):
    import hwdeploy as hw

    loaded = worker.request("load", nb=str(mlp_nb))
    assert loaded["inputs"] == ["x"]
    pid = worker.pid
    reference = hw.predictor(zoo_model("mlp").model, device="cpu", threads=1)
    for batch in (1, 3, 64):  # growing inputs remap the shared files
        x = np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)
        (y,), seconds = worker.run(loaded["handle"], [x])
        assert y.shape == (batch, 8) and seconds > 0
        np.testing.assert_allclose(y, reference.run(x)[0], rtol=1e-4, atol=1e-5)
    assert worker.pid == pid and worker.generation == 1  # one process for all calls
    assert sorted(p.name for p in Path(worker._dir).iterdir()) == ["in", "out"]  # the two mapped tensor files


def test_unsupported_dtype_is_refused_before_lite(worker, mlp_nb):
    handle = worker.request("load", nb=str(mlp_nb))["handle"]
    with pytest.raises(BackendError, match="cannot take float16"):
        worker.run(handle, [np.zeros((1, 64), np.float16)])  # Lite's from_numpy would abort on this
    assert worker.alive  # a Python-level refusal: the worker is still up


def test_crash_becomes_a_clear_error_and_the_next_call_restarts(worker, mlp_nb):
    handle = worker.request("load", nb=str(mlp_nb))["handle"]
    first_pid = worker.pid
    with pytest.raises(LiteWorkerError) as info:
        worker.run(handle, [np.ones((2, 65), np.float32)])  # 65 != 64: Lite's matmul CHECK aborts
    error = info.value
    assert error.returncode == -6 and "SIGABRT (rc 134)" in str(error)
    assert "Check failed" in error.log_tail and "65" in error.log_tail
    assert not worker.alive
    handle = worker.request("load", nb=str(mlp_nb))["handle"]  # a fresh worker
    assert worker.pid != first_pid and worker.generation == 2
    (y,), _ = worker.run(handle, [np.ones((2, 64), np.float32)])
    assert y.shape == (2, 8)


def test_worker_abort_outside_lite_is_reported_too(worker):
    worker.start()
    with pytest.raises(LiteWorkerError, match="SIGABRT"):
        worker.request("crash")


def test_closing_removes_the_process_and_shared_files(lite_python, mlp_nb):
    w = LiteWorker(lite_python)
    w.request("load", nb=str(mlp_nb))
    pid, directory = w.pid, Path(w._dir)
    w.close()
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_worker_script_is_python37_syntax():
    """The worker runs under the Lite interpreter (3.7-3.10): no 3.8+ syntax may creep in."""
    import ast

    tree = ast.parse(WORKER_SCRIPT.read_text(), feature_version=(3, 7))
    assert tree.body


def test_an_interpreter_without_paddlelite_is_reported_not_crashed(monkeypatch):
    base = env.find_base_python()  # a plain CPython 3.10: no numpy, no paddlelite
    if base is None:
        pytest.skip("no plain CPython 3.10 on this machine")
    monkeypatch.setenv(env.ENV_VAR, base)
    with pytest.raises(BackendError, match="did not start.*No module named"):
        LiteWorker().start()
    from hwdeploy_arm import plugin

    lite_cpu = next(d for d in plugin.hwdeploy_discover_devices() if d.kind == "cpu")
    assert not lite_cpu.available and f"Paddle Lite runtime {base} does not work" in lite_cpu.reason
