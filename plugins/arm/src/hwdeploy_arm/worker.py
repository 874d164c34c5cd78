"""The host side of the Paddle Lite worker: a long-lived child process under the Lite interpreter.

Why a process: Lite reports errors by aborting (SIGABRT, rc 134) or crashing (SIGSEGV, rc 139),
even through its Python API, and its wheels need CPython <= 3.10. A :class:`LiteWorker` keeps one
such process up across calls; requests are JSON lines, tensors cross through two memory-mapped
files in ``/dev/shm`` (no copies through pipes, no JSON lists). If the process dies, the caller
gets a :class:`LiteWorkerError` with the exit signal and Lite's last log lines, and the next
request starts a fresh process.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwdeploy.errors import BackendError
from hwdeploy.sdk.isolation import describe_exit

from hwdeploy_arm.env import ensure_lite_python

log = logging.getLogger("hwdeploy.lite")

WORKER_SCRIPT = Path(__file__).with_name("_lite_worker.py")
PROTOCOL = 1
START_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 300.0
_ALIGN = 64
# Environment variables of the host's interpreter that must not leak into the <=3.10 one.
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


class LiteWorkerError(BackendError):
    """The Lite worker died (abort, crash, kill) or timed out; ``log_tail`` holds Lite's last lines."""

    def __init__(self, message: str, returncode: int | None = None, log_tail: str = "", timed_out: bool = False):
        super().__init__(message)
        self.returncode = returncode
        self.log_tail = log_tail
        self.timed_out = timed_out


class _Mapped:
    """A file in shared memory, mapped and remapped as it grows."""

    def __init__(self, path: Path):
        self.path = path
        path.touch()
        self.size = 0
        self.map: mmap.mmap | None = None

    def ensure(self, size: int, grow: bool) -> mmap.mmap:
        size = max(size, 1)
        if grow and os.path.getsize(self.path) < size:
            os.truncate(self.path, size)
        if self.map is None or self.size != size:
            if self.map is not None:
                self.map.close()
            with open(self.path, "r+b") as fh:
                self.map = mmap.mmap(fh.fileno(), size)
            self.size = size
        return self.map

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None


def _shm_root() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _shutdown(proc: subprocess.Popen, directory: str) -> None:
    """Stop a worker process and remove its shared files (also runs from a finalizer at exit)."""
    if proc.poll() is None:
        try:
            proc.stdin.write(b'{"cmd": "exit"}\n')
            proc.stdin.flush()
            proc.wait(timeout=3)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except (OSError, ValueError, AttributeError):
            pass
    shutil.rmtree(directory, ignore_errors=True)


class LiteWorker:
    """One Paddle Lite worker process, started on first use and restarted after a crash.

    ``threads`` sets the math-library threads of the x86 runtime (MKL/OpenMP are per process,
    so each predictor gets its own worker) and is passed to ``MobileConfig.set_threads`` on ARM.
    ``generation`` counts (re)starts: predictors loaded in an older generation must reload.
    Thread-safe: one request at a time.
    """

    def __init__(self, python: str | None = None, *, threads: int = 1, name: str = "lite",
                 env: dict[str, str] | None = None):
        self.python = python or ensure_lite_python().path
        self.threads = threads
        self.name = name
        self.extra_env = dict(env or {})
        self.generation = 0
        self.info: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._log: deque[str] = deque(maxlen=500)
        self._buffer = b""
        self._dir: str | None = None
        self._in: _Mapped | None = None
        self._out: _Mapped | None = None
        self._finalizer: weakref.finalize | None = None
        self._drain: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start the process if it is not running (done implicitly by every request)."""
        with self._lock:
            if self.alive:
                return
            self._cleanup()
            self._dir = tempfile.mkdtemp(prefix=f"hwdeploy-{self.name}-", dir=_shm_root())
            self._in, self._out = _Mapped(Path(self._dir) / "in"), _Mapped(Path(self._dir) / "out")
            env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
            env.update({"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
                        "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"})
            env.update(self.extra_env)
            try:
                self._proc = subprocess.Popen([self.python, str(WORKER_SCRIPT)], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                              cwd=self._dir, start_new_session=True)
            except OSError as exc:
                raise BackendError(f"cannot start the Paddle Lite worker with {self.python}: {exc}") from exc
            self.generation += 1
            self._buffer = b""
            self._log.clear()
            self._drain = threading.Thread(target=self._drain_stderr, args=(self._proc,), daemon=True,
                                           name=f"hwdeploy-{self.name}-log")
            self._drain.start()
            self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._dir)
            try:
                self.info = self._request({"cmd": "hello", "shm_in": str(self._in.path),
                                           "shm_out": str(self._out.path)}, START_TIMEOUT, "start-up")
                if self.info.get("protocol") != PROTOCOL:
                    raise BackendError(f"Paddle Lite worker protocol {self.info.get('protocol')} != {PROTOCOL}")
            except BackendError as exc:
                self._cleanup()
                raise BackendError(f"the Paddle Lite worker ({self.python}) did not start: {exc}") from exc
            log.debug("Paddle Lite worker %s started: %s", self._proc.pid, self.info)

    def close(self) -> None:
        """Stop the process and free its shared memory. Idempotent."""
        with self._lock:
            self._cleanup()

    def _cleanup(self) -> None:
        for mapped in (self._in, self._out):
            if mapped is not None:
                mapped.close()
        if self._finalizer is not None:
            self._finalizer()  # stops the process, removes the directory
            self._finalizer = None
        self._proc = None

    def __enter__(self) -> "LiteWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        try:
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self._log.append(line)
                    log.debug("lite[%s] %s", proc.pid, line)
        except (OSError, ValueError):  # the stream was closed by close()
            pass

    def log_tail(self, lines: int = 20) -> str:
        """The last lines Lite (and the worker) wrote to stderr/stdout."""
        return "\n".join(list(self._log)[-lines:])

    # ------------------------------------------------------------------ requests
    def request(self, cmd: str, timeout: float | None = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send one command; return its result. Raises LiteWorkerError if the process dies."""
        with self._lock:
            self.start()
            return self._request({"cmd": cmd, **fields}, timeout, cmd)

    def _request(self, message: dict[str, Any], timeout: float | None, what: str) -> dict[str, Any]:
        proc = self._proc
        try:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(what) from None
        line = self._readline(timeout, what)
        reply = json.loads(line)
        if not reply.get("ok"):
            raise BackendError(f"Paddle Lite {what} failed: {reply.get('error')}")
        return reply["result"]

    def _readline(self, timeout: float | None, what: str) -> bytes:
        fd = self._proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                self._kill()
                raise LiteWorkerError(f"Paddle Lite worker timed out after {timeout:g}s during {what}; it was killed."
                                      f" Last Lite log lines:\n{self.log_tail()}", None, self.log_tail(), True)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died(what)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _kill(self) -> None:
        try:
            os.killpg(self._proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            self._proc.kill()
        self._proc.wait()
        self._cleanup()

    def _died(self, what: str) -> LiteWorkerError:
        proc = self._proc
        try:
            returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
            returncode = proc.returncode
        if self._drain is not None:
            self._drain.join(timeout=2)  # collect the last lines (the abort message comes last)
        tail = self.log_tail()
        self._cleanup()
        rc = returncode if returncode is None or returncode >= 0 else 128 - returncode
        return LiteWorkerError(f"Paddle Lite worker (pid {proc.pid}) {describe_exit(returncode)} (rc {rc}) during"
                               f" {what}; the host process is unaffected and the next call starts a new worker."
                               f" Last Lite log lines:\n{tail or '(none)'}", returncode, tail)

    # ------------------------------------------------------------------ tensors
    def run(self, handle: int, arrays: Sequence[np.ndarray], timeout: float | None = DEFAULT_TIMEOUT
            ) -> tuple[list[np.ndarray], float]:
        """Run loaded predictor ``handle`` on ``arrays``; returns (outputs, seconds Lite's run took)."""
        with self._lock:
            self.start()
            specs, offset = [], 0
            for array in arrays:
                specs.append({"offset": offset, "dtype": str(array.dtype), "shape": list(array.shape)})
                offset += (array.nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
            size = self._in.size if offset <= self._in.size else max(offset, 2 * self._in.size, 1 << 16)
            buffer = self._in.ensure(size, grow=True)
            for array, spec in zip(arrays, specs):
                np.ndarray(array.shape, array.dtype, buffer=buffer, offset=spec["offset"])[...] = array
            result = self._request({"cmd": "run", "handle": handle, "inputs": specs, "in_size": size}, timeout,
                                   "run")
            out = self._out.ensure(result["out_size"], grow=False)
            outputs = [np.ndarray(tuple(s["shape"]), s["dtype"], buffer=out, offset=s["offset"]).copy()
                       for s in result["outputs"]]
            return outputs, result["run_seconds"]


def run_check(python: str, model_file: str, param_file: str, valid_targets: str, timeout: float = 120.0
              ) -> tuple[int | None, str]:
    """opt's ``check_if_model_supported`` in a one-shot process: (returncode, everything it printed).

    It prints the model's ops with one column per valid target and then always ends the process:
    exit 1 when every op is supported, SIGABRT listing the unsupported ops otherwise.
    """
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    try:
        proc = subprocess.run([python, str(WORKER_SCRIPT), "check", model_file, param_file, valid_targets],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                              timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        return None, (exc.stdout or b"").decode(errors="replace")
    return proc.returncode, proc.stdout.decode(errors="replace")


_tool_lock = threading.Lock()
_tool: LiteWorker | None = None


def tool_worker() -> LiteWorker:
    """The shared worker conversions use (opt, .nb visualisation); restarted after a crash."""
    global _tool
    with _tool_lock:
        if _tool is None or _tool.python != ensure_lite_python().path:
            if _tool is not None:
                _tool.close()
            _tool = LiteWorker(name="lite-opt")
        return _tool
