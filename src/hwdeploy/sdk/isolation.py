"""Run code that may crash, abort or hang in a child process, with a timeout.

Native runtimes (Paddle, drivers, Paddle Lite) can abort the whole process on
bad input. Discovery probes and anything that cannot be validated up front go
through here, so the caller's process survives and gets a clear error instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Sequence

from hwdeploy.sdk.cache import cache_dir, cache_key, read_verified_file, write_verified_file

_MARK = "\x1ehwdeploy-probe-result:"

_CHILD = f"""
import importlib, json, sys
mod, _, fn = sys.argv[1].partition(":")
args = json.loads(sys.argv[2])
value = getattr(importlib.import_module(mod), fn)(*args)
sys.stdout.flush()
sys.stdout.write({_MARK!r} + json.dumps(value) + "\\n")
sys.stdout.flush()
"""


@dataclass
class ProbeResult:
    ok: bool
    value: Any = None
    error: str = ""
    returncode: int | None = None
    timed_out: bool = False
    stderr_tail: str = ""
    seconds: float = 0.0

    @property
    def crashed(self) -> bool:
        return self.returncode is not None and self.returncode < 0


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


_memory_cache: dict[str, ProbeResult] = {}


def run_probe(target: str, args: Sequence[Any] = (), *, timeout: float = 30.0, env: dict[str, str] | None = None,
              cache_ttl: float = 0.0, cache_env: Sequence[str] = (), python: str | None = None) -> ProbeResult:
    """Call ``module:function(*args)`` in a fresh Python process; return its JSON result.

    - A crash (signal), non-zero exit, exception or timeout gives ``ok=False``
      with the reason and the tail of stderr; the caller never crashes.
    - ``cache_ttl > 0`` keeps a successful result on disk that long, keyed by
      target, args, the values of the ``cache_env`` variables and the installed
      hwdeploy/paddlepaddle versions: discovery stays fast on repeated calls.
    """
    key = cache_key(target, list(args), {k: os.environ.get(k) for k in cache_env}, _versions(), python)
    if cache_ttl > 0:
        hit = _memory_cache.get(key)
        if hit is None:
            path = cache_dir("probes") / f"{key}.json"
            try:
                fresh = time.time() - path.stat().st_mtime < cache_ttl
            except OSError:
                fresh = False
            text = read_verified_file(path) if fresh else None  # a damaged file is dropped, and probed again
            try:
                hit = ProbeResult(**json.loads(text)) if text is not None else None
            except (ValueError, TypeError):
                hit = None
        if hit is not None:
            return hit
    result = _run(target, args, timeout, env, python)
    if cache_ttl > 0 and result.ok:
        _memory_cache[key] = result
        write_verified_file(cache_dir("probes") / f"{key}.json", json.dumps(result.__dict__))
    return result


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in ("hwdeploy", "paddlepaddle", "paddlepaddle-gpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _run(target: str, args: Sequence[Any], timeout: float, env: dict[str, str] | None, python: str | None) -> ProbeResult:
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env.setdefault("GLOG_minloglevel", "2")
    started = time.monotonic()
    proc = subprocess.Popen([python or sys.executable, "-c", _CHILD, target, json.dumps(list(args))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        out, err = proc.communicate()
        return ProbeResult(False, error=f"{target} timed out after {timeout:g}s", timed_out=True,
                           stderr_tail=_tail(err), seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    text = out.decode(errors="replace")
    if proc.returncode == 0 and _MARK in text:
        return ProbeResult(True, json.loads(text.rsplit(_MARK, 1)[1]), returncode=0, stderr_tail=_tail(err),
                           seconds=seconds)
    tail = _tail(err)
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return ProbeResult(False, error=f"{target} {describe_exit(proc.returncode)}" + (f": {last}" if last else ""),
                       returncode=proc.returncode, stderr_tail=tail, seconds=seconds)


def kill_process_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(data: bytes, lines: int = 30) -> str:
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
