"""Headless Chromium driven by Playwright: one browser per process, one page per predictor.

Playwright's sync API cannot run inside an asyncio loop and is bound to the
thread that started it. So the browser lives on a private thread running its
own event loop with Playwright's *async* API; predictors in any thread (or in
a Jupyter/asyncio program) submit coroutines to it and wait. Each predictor
has its own browser context and page, so clones run concurrently.

No port is opened: the page, the Paddle.js bundles and the model are served
from Python memory by request interception, and every other request is
aborted. Chromium is the system one (``executable_path``): Playwright never
downloads a browser here.

Cleanup: the browser closes when its last page does, at interpreter exit
(atexit), and Playwright's driver takes it down if this process dies.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import logging
import os
import shutil
import threading
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy.errors import BackendError

log = logging.getLogger("hwdeploy.webgl")

ENV_CHROMIUM = "HWDEPLOY_CHROMIUM"
ENV_ARGS = "HWDEPLOY_CHROMIUM_ARGS"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
BASE_URL = "http://hwdeploy.invalid/"
MARKER = "--hwdeploy-webgl-session="
# Quiet, offline, GPU allowed where there is one (headless Chromium otherwise uses SwiftShader).
DEFAULT_ARGS = ("--ignore-gpu-blocklist", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync", "--disable-breakpad", "--disable-crash-reporter",
                "--disable-dev-shm-usage")
_HERE = Path(__file__).parent
CONTENT_TYPES = {".html": "text/html", ".js": "application/javascript", ".json": "application/json",
                 ".dat": "application/octet-stream"}
PAGE = (b"<!doctype html><html><head><meta charset='utf-8'><title>loading</title>"
        b"<script src='/paddlejs-core.js'></script><script src='/paddlejs-backend-webgl.js'></script>"
        b"<script src='/harness.js'></script></head><body></body></html>")


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable: ``explicit``, else ``$HWDEPLOY_CHROMIUM``, else chromium on PATH."""
    for candidate in (explicit, os.environ.get(ENV_CHROMIUM)):
        if candidate:
            path = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
            return path
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_args(extra: list[str] | None = None) -> list[str]:
    args = list(DEFAULT_ARGS)
    env = os.environ.get(ENV_ARGS)
    if env:
        args += env.split()
    return args + list(extra or [])


def playwright_version() -> str:
    try:
        return metadata.version("playwright")
    except metadata.PackageNotFoundError:
        return ""


def session_processes(session_id: str) -> list[int]:
    """PIDs of the Chromium processes of one browser session (by its marker and profile dir); Linux only."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                procs[int(entry)] = (Path("/proc", entry, "cmdline").read_bytes().decode(errors="replace")
                                     .replace("\0", " "))
            except OSError:
                continue
    mains = [pid for pid, cmd in procs.items() if MARKER + session_id in cmd]
    profiles = set()
    for pid in mains:
        for part in procs[pid].split():
            if part.startswith("--user-data-dir="):
                profiles.add(part)
    return sorted(pid for pid, cmd in procs.items()
                  if MARKER + session_id in cmd or any(p in cmd for p in profiles))


class BrowserHost:
    """One Chromium plus the event-loop thread that drives it."""

    def __init__(self, executable: str, args: list[str], launch_timeout: float = 60.0):
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            raise BackendError("the Python package 'playwright' is not installed: pip install playwright"
                               " (no browser download needed: the system Chromium is used)") from None
        self.executable = executable
        self.session_id = uuid.uuid4().hex
        self.args = list(args) + [MARKER + self.session_id]
        self.pages = 0
        self.closed = False
        self.crashed: str | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hwdeploy-webgl-browser", daemon=True)
        self.thread.start()
        self._async_playwright = async_playwright
        try:
            self.call(self._start(), launch_timeout, "launching Chromium")
        except BaseException:
            self.shutdown()
            raise

    async def _start(self) -> None:
        self.playwright = await self._async_playwright().start()
        self.browser = None
        try:
            self.browser = await self.playwright.chromium.launch(
                executable_path=self.executable, headless=True, args=self.args,
                handle_sigint=False, handle_sigterm=False, handle_sighup=False)
        except Exception as exc:
            raise BackendError(f"could not launch Chromium {self.executable}: {_first_line(exc)}") from None
        self.version = self.browser.version
        self.browser.on("disconnected", self._on_disconnected)

    def _on_disconnected(self, *_: Any) -> None:
        if not self.closed:
            self.crashed = "the Chromium browser process exited unexpectedly (crashed or was killed)"
            log.error("hwdeploy webgl: %s", self.crashed)

    def call(self, coro, timeout: float | None, what: str):
        """Run ``coro`` on the browser thread; Playwright errors become :class:`BackendError`."""
        if self.closed and not what.startswith("closing"):
            coro.close()
            raise BackendError(f"{what}: the browser session is closed")
        future = asyncio.run_coroutine_threadsafe(_with_timeout(coro, timeout), self.loop)
        try:
            return future.result()
        except BackendError:
            raise
        except asyncio.TimeoutError:
            raise BackendError(f"{what} timed out after {timeout:g}s") from None
        except Exception as exc:
            if self.crashed:
                raise BackendError(f"{what} failed: {self.crashed}") from exc
            raise BackendError(f"{what} failed: {_first_line(exc)}") from exc

    def shutdown(self) -> None:
        """Close the browser, stop Playwright and the thread. Idempotent."""
        if self.closed:
            return
        self.closed = True

        async def stop():
            try:
                if getattr(self, "browser", None) is not None and self.browser.is_connected():
                    await self.browser.close()
            finally:
                if getattr(self, "playwright", None) is not None:
                    await self.playwright.stop()

        if self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
            except Exception as exc:  # already dead: nothing left to close
                log.debug("hwdeploy webgl: closing the browser: %s", exc)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


async def _with_timeout(coro, timeout):
    return await (asyncio.wait_for(coro, timeout) if timeout else coro)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("=", "Call log"))]
    return (lines[0] if lines else type(exc).__name__)[:500]


_hosts: dict[tuple, BrowserHost] = {}
_hosts_lock = threading.Lock()


def acquire_host(executable: str, args: list[str]) -> BrowserHost:
    key = (executable, tuple(args))
    with _hosts_lock:
        host = _hosts.get(key)
        if host is None or host.closed or host.crashed:
            if host is not None and not host.closed:
                threading.Thread(target=host.shutdown, daemon=True).start()
            host = BrowserHost(executable, args)
            _hosts[key] = host
        host.pages += 1
        return host


def release_host(host: BrowserHost) -> None:
    with _hosts_lock:
        host.pages -= 1
        if host.pages > 0:
            return
        for key, value in list(_hosts.items()):
            if value is host:
                del _hosts[key]
    host.shutdown()


@atexit.register
def shutdown_all() -> None:
    """Close every browser this process started (also run at interpreter exit)."""
    with _hosts_lock:
        hosts = list(_hosts.values())
        _hosts.clear()
    for host in hosts:
        host.shutdown()


class Session:
    """One page running one Paddle.js model.

    ``files`` maps URL paths (``"m/model.json"``, ``"m/chunk_1.dat"``) to bytes;
    with the bundles and the harness they are everything the page may fetch.
    Console errors and page errors raised during a call become a
    :class:`BackendError` for that call: Paddle.js reports unregistered ops and
    shader compile failures only on the console.
    """

    def __init__(self, executable: str, args: list[str], bundles: dict[str, bytes], files: dict[str, bytes], *,
                 timeout: float = 120.0):
        self.timeout = timeout
        self.files = dict(files)
        self.files.update(bundles)
        self.files["index.html"] = PAGE
        self.files["harness.js"] = (_HERE / "harness.js").read_bytes()
        self.errors: list[str] = []
        self.crashed: str | None = None
        self.closed = False
        self.lock = threading.Lock()
        self.host = acquire_host(executable, args)
        self.page = self.context = None
        try:
            self.host.call(self._open(), timeout, "opening the Paddle.js page")
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        self.context = await self.host.browser.new_context()
        await self.context.route("**/*", self._serve)
        self.page = await self.context.new_page()
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("crash", self._on_crash)
        await self.page.goto(BASE_URL + "index.html")
        await self.page.wait_for_function("document.title === 'hwdeploy-ready'")

    async def _serve(self, route) -> None:
        url = route.request.url
        path = url[len(BASE_URL):].split("?")[0] if url.startswith(BASE_URL) else None
        if path is None or path not in self.files:
            await route.abort("blockedbyclient")  # nothing leaves the page: no network, no port
            return
        await route.fulfill(status=200, body=self.files[path],
                            content_type=CONTENT_TYPES.get(Path(path).suffix, "application/octet-stream"))

    def _on_console(self, msg) -> None:
        text = msg.text
        if msg.type == "error" or "[unregistered op]" in text or "ArrayBufferView not big enough" in text:
            self.errors.append(f"console {msg.type}: {text}")

    def _on_crash(self, *_: Any) -> None:
        self.crashed = "the browser page running the model crashed (renderer or GPU process)"
        log.error("hwdeploy webgl: %s", self.crashed)

    def _call(self, coro, what: str):
        if self.closed:
            coro.close()
            raise BackendError(f"{what}: the predictor is closed")
        if self.crashed or self.host.crashed:
            coro.close()
            raise BackendError(f"{what}: {self.crashed or self.host.crashed}")
        with self.lock:
            del self.errors[:]
            try:
                result = self.host.call(coro, self.timeout, what)
            except BackendError as exc:
                why = self.crashed or self.host.crashed
                if why and why not in str(exc):
                    raise BackendError(f"{what} failed: {why}") from exc
                if self.errors:
                    raise BackendError(f"{what} failed: {exc}; browser errors: {' | '.join(self.errors[:5])}") from exc
                raise
            if self.errors:
                raise BackendError(f"{what}: the browser reported errors: " + " | ".join(self.errors[:5]))
            return result

    def evaluate(self, expression: str, arg: Any = None, what: str = "running in the browser"):
        return self._call(self.page.evaluate(expression, arg), what)

    def load(self, model_path: str) -> dict[str, Any]:
        return self.evaluate("(p) => window.hwdeploy.init(p)", model_path, "loading the model in Paddle.js")

    def predict(self, array: np.ndarray) -> np.ndarray:
        data = base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")
        out = self.evaluate("([d, s]) => window.hwdeploy.predict(d, s)", [data, list(array.shape)],
                            "Paddle.js predict")
        return np.frombuffer(base64.b64decode(out), dtype="<f4")

    def close(self) -> None:
        if self.closed:
            return
        if threading.current_thread() is self.host.thread:  # e.g. a finalizer run by the browser thread
            threading.Thread(target=self.close, daemon=True).start()
            return
        self.closed = True
        host = self.host

        async def close_context():
            if self.context is not None:
                await self.context.close()

        try:
            if not host.closed and not host.crashed and host.browser is not None and host.browser.is_connected():
                host.call(close_context(), 30, "closing the page")
        except BackendError as exc:
            log.debug("hwdeploy webgl: %s", exc)
        finally:
            release_host(host)
