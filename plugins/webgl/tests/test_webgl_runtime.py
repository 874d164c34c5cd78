"""The webgl device and predictor at run time: discovery, software-renderer fallback, receipts, browser errors,
crashes, threads, and no Chromium left behind (on close, on error, at exit, when the process is killed)."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import hwdeploy
from hwdeploy.selection import select_devices
from hwdeploy.contract.records import DeviceSpec
from hwdeploy.errors import BackendError, FallbackError, OptionError
from hwdeploy.contract.records import Artifact
from hwdeploy_webgl import assets, browser
from hwdeploy_webgl.predictor import WebGLPredictor
from webgl_testlib import assert_parity, cpu_reference, model_input, wait_gone

pytestmark = pytest.mark.slow
#: Forces Chromium's software WebGL (SwiftShader) even on a machine with a GPU: the fallback tests stay meaningful.
SOFTWARE = ["--use-angle=swiftshader"]


def _descendant_browsers() -> list[str]:
    """Chromium / Playwright-driver processes started (directly or not) by this test process."""
    parents, cmds = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            cmds[int(entry)] = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    mine, found = {os.getpid()}, True
    while found:
        found = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                found = True
    return [cmds[p][:120] for p in mine - {os.getpid()} if "chrom" in cmds[p] or "run-driver" in cmds[p]]


def _no_browsers_left(timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = _descendant_browsers()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _descendant_browsers()
    return left


@pytest.fixture
def extras(webgl_ready, small_models):
    return small_models["extras"]


# ------------------------------------------------------------------ discovery


def test_discovery_reports_renderer_and_software(webgl_ready):
    d = webgl_ready
    assert d.id == "webgl:0" and d.backend == "paddle.js-webgl" and d.priority < 0
    assert d.details["webgl2"] and d.details["float_framebuffer"] and d.details["color_buffer_float"]
    assert d.details["renderer"] and d.details["renderer"] in d.name
    # This machine has no GPU: Chromium's WebGL is SwiftShader, a CPU rasterizer, and says so.
    assert d.details["software_renderer"] is ("SwiftShader" in d.details["renderer"])
    assert d.versions["paddlejs-core"] == "2.2.0" and d.versions["chromium"]


def test_auto_never_picks_webgl(webgl_ready):
    candidates = select_devices(DeviceSpec.parse("auto"), hwdeploy.devices())
    assert candidates and "webgl" not in {d.kind for d in candidates}


@pytest.mark.parametrize("break_it, reason", [
    ("chromium", "Chromium not found"),
    ("assets", "webgl-setup"),
    ("playwright", "pip install playwright"),
])
def test_discovery_says_why_absent(extras, monkeypatch, tmp_path, break_it, reason):
    if break_it == "chromium":
        monkeypatch.setenv(browser.ENV_CHROMIUM, str(tmp_path / "no-such-chromium"))
    elif break_it == "assets":
        monkeypatch.setenv(assets.ENV_DIR, str(tmp_path))
    else:
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "playwright" else real(name, *a))
    try:
        webgl = [d for d in hwdeploy.devices(refresh=True) if d.kind == "webgl"]
        assert len(webgl) == 1 and not webgl[0].available and reason in webgl[0].reason
        with pytest.raises(hwdeploy.DeviceNotFoundError, match=reason):
            hwdeploy.predictor(extras, device="webgl")
    finally:
        monkeypatch.undo()
        hwdeploy.devices(refresh=True)


def test_tampered_bundle_is_refused(paddlejs_assets, tmp_path):
    copy = tmp_path / "paddlejs"
    shutil.copytree(paddlejs_assets, copy)
    assert assets.problems(copy) == []
    bundle = copy / "node_modules/@paddlejs/paddlejs-core/lib/index.js"
    bundle.write_bytes(bundle.read_bytes() + b"\n// patched")
    problems = assets.problems(copy)
    assert len(problems) == 1 and "sha256" in problems[0] and "2.2.0" in problems[0]
    with pytest.raises(assets.AssetsError, match="does not match the pinned"):
        assets.load(copy)


def test_setup_command_installs_pinned_versions(tmp_path):
    """`hwdeploy webgl-setup` (a plugin CLI command): npm install of the pins, sha256 checked."""
    target = tmp_path / "pjs"
    proc = subprocess.run([sys.executable, "-m", "hwdeploy", "webgl-setup", "--dir", str(target)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "@paddlejs/paddlejs-core@2.2.0" in proc.stdout and assets.problems(target) == []
    assert (target / "node_modules/@paddlejs/paddlejs-backend-webgl/package.json").is_file()


# ------------------------------------------------------------------ fallback policy and receipts


def test_software_renderer_is_a_fallback_by_default(extras):
    with pytest.raises(FallbackError) as info:
        hwdeploy.predictor(extras, device="webgl", chromium_args=SOFTWARE)
    receipt = info.value.receipt
    assert receipt.actual == "webgl:0" and receipt.fallback_evidence
    assert "software rasterizer" in receipt.fallback_evidence[0] and "SwiftShader" in receipt.fallback_evidence[0]
    assert not _no_browsers_left()  # the refused predictor was closed


def test_software_renderer_allowed_explicitly(extras):
    with hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True, chromium_args=SOFTWARE) as p:
        receipt = p.receipt()
        assert p.software_renderer and "SwiftShader" in p.renderer
    assert receipt.fallback_reasons() == [] and receipt.policy == "error"
    assert any("accepted (allow_software_renderer=True)" in e for e in receipt.evidence)
    assert any("UNMASKED_RENDERER_WEBGL" in e for e in receipt.evidence)
    assert receipt.ops_known and receipt.ops and all(op.device == "webgl:0" for op in receipt.ops)
    assert receipt.runtime_versions["paddlejs-backend-webgl"] == "1.2.9" and receipt.runtime_versions["chromium"]
    json.loads(receipt.to_json())


def test_fallback_warn_policy(extras):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with hwdeploy.predictor(extras, device="webgl", fallback="warn", chromium_args=SOFTWARE) as p:
            assert p.receipt().fallback_reasons()
    assert any("software rasterizer" in str(w.message) for w in caught)


def test_options_are_checked(extras):
    with pytest.raises(OptionError, match="unknown option"):
        hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True, threads=2)
    with pytest.raises(OptionError, match="fp32 only"):
        hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True, precision="fp16")


# ------------------------------------------------------------------ browser errors become Python errors


def _tampered(artifact: Artifact, tmp_path, edit) -> Artifact:
    copy = tmp_path / "tampered"
    shutil.copytree(artifact.directory, copy)
    graph = json.loads((copy / "model.json").read_text())
    edit(graph)
    (copy / "model.json").write_text(json.dumps(graph))
    return Artifact.load(copy)


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["ops"][1].update(type="gelu"), "[unregistered op] gelu"),
    (lambda g: next(op for op in g["ops"] if op["type"] == "conv2d")["attrs"].update(fuse_relu="no_such_thing"),
     "compile"),
])
def test_console_errors_become_backend_errors(webgl_ready, small_models, tmp_path, edit, message):
    model = hwdeploy.load_model(small_models["relu6_conv"])
    artifact = _tampered(hwdeploy.convert(model, "webgl"), tmp_path, edit)
    with pytest.raises(BackendError, match="browser reported errors") as info:
        WebGLPredictor(model, webgl_ready, {"allow_software_renderer": True}, artifact=artifact)
    assert message in str(info.value)
    assert not _no_browsers_left()


def test_page_crash_is_a_clear_error(extras):
    p = hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True)
    session = p._session
    with pytest.raises(BackendError):
        session.host.call(session.page.goto("chrome://crash"), 30, "crashing the page")
    with pytest.raises(BackendError, match="page running the model crashed"):
        p.run(model_input("extras", 1))
    p.close()
    assert wait_gone(p.browser_session_id) == []


def test_browser_crash_is_a_clear_error(extras):
    p = hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True)
    pids = browser.session_processes(p.browser_session_id)
    assert pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    with pytest.raises(BackendError, match="exited unexpectedly"):
        p.run(model_input("extras", 1))
    p.close()
    with hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True) as q:  # a fresh browser
        assert q.browser_session_id != p.browser_session_id
        assert_parity(q.run(model_input("extras", 1))[0], cpu_reference(extras, model_input("extras", 1))[0])
    assert not _no_browsers_left()


def test_timeout_is_an_error_without_leak(extras):
    with pytest.raises(BackendError, match="timed out"):
        hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True, timeout=0.001)
    assert not _no_browsers_left()


# ------------------------------------------------------------------ lifecycle


def test_close_leaves_no_browser(extras):
    p = hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True)
    q = p.clone()
    assert browser.session_processes(p.browser_session_id)
    p.close()
    assert browser.session_processes(q.browser_session_id)  # the clone keeps the shared browser
    q.run(model_input("extras", 1))
    q.close()
    q.close()  # idempotent
    assert wait_gone(p.browser_session_id) == [] and not _no_browsers_left()
    with pytest.raises(BackendError, match="closed"):
        q.run(model_input("extras", 1))


EXIT_SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np, hwdeploy
    p = hwdeploy.predictor(sys.argv[1], device="webgl", allow_software_renderer=True)
    p.run(np.ones((1, 5), "float32"))
    print("SESSION", p.browser_session_id, flush=True)
    if sys.argv[2] == "hang":
        time.sleep(120)
""")


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_browser_left_when_the_process_ends(extras, tmp_path, how):
    """Interpreter exit without close() (atexit), and SIGKILL (Playwright's driver takes Chromium down)."""
    script = tmp_path / "use_webgl.py"
    script.write_text(EXIT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(extras), "exit" if how == "exit" else "hang"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("SESSION"), line
        session = line.split()[1]
        if how == "sigkill":
            assert browser.session_processes(session)
            proc.kill()
        assert proc.wait(60) in (0, -signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(session, 20) == []


# ------------------------------------------------------------------ threads and asyncio


def test_clones_in_threads_and_inside_an_event_loop(extras):
    inputs = [model_input("extras", 1, seed=s) for s in range(6)]
    refs = [cpu_reference(extras, x)[0] for x in inputs]
    with hwdeploy.predictor(extras, device="webgl", allow_software_renderer=True) as p:
        clone = p.clone()
        results, errors = {}, []

        def work(pred, seeds):
            try:
                for s in seeds:
                    results[s] = pred.run(inputs[s])[0]
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(pred, seeds))
                   for pred, seeds in ((p, [0, 1, 2]), (clone, [3, 4, 5]), (p, [0, 4]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        clone.close()
        assert not errors and len(results) == 6
        for s in range(6):
            assert_parity(results[s], refs[s])

        async def in_loop():  # Playwright's sync API would refuse to run here
            return p.run(inputs[0])[0]

        assert_parity(asyncio.run(in_loop()), refs[0])
    assert not _no_browsers_left()
