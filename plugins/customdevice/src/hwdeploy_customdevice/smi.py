"""The vendor's management tool (``npu-smi``, ``cnmon``...): reported by discovery, read for utilisation.

The tool may be missing, fail or hang (a wedged driver): every call has a
timeout and reports, never raises, so neither discovery nor a timed
conformance run can be stopped by it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

SMI_TIMEOUT = 10.0


@dataclass
class SmiReport:
    """The result of running a vendor management tool (``npu-smi info``, ``cnmon info``)."""

    tool: str
    found: bool
    ok: bool = False
    output: str = ""
    error: str = ""

    def summary(self) -> str:
        if not self.found:
            return f"{self.tool} not found on PATH"
        if not self.ok:
            return f"{self.tool} failed: {self.error}"
        return f"{self.tool} ran"


def run_smi(argv: Sequence[str], timeout: float | None = None) -> SmiReport:
    """Run a vendor tool with a timeout (default :data:`SMI_TIMEOUT`); a missing, failing or hanging tool is
    reported, never raised."""
    timeout = SMI_TIMEOUT if timeout is None else timeout
    tool = argv[0]
    path = shutil.which(tool)
    if path is None:
        return SmiReport(tool, False)
    try:
        done = subprocess.run([path, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        return SmiReport(tool, True, error=f"timed out after {timeout:g}s")
    except OSError as exc:
        return SmiReport(tool, True, error=str(exc))
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return SmiReport(tool, True, error=f"exit status {done.returncode}: {last[0][:200]}", output=done.stdout)
    return SmiReport(tool, True, True, done.stdout)


class SmiSampler:
    """Samples a device's busy percentage by running a vendor tool periodically (a thread)."""

    def __init__(self, argv: Sequence[str], pattern: str, interval: float = 0.2, timeout: float = 5.0):
        self.argv = list(argv)
        self.pattern = re.compile(pattern)
        self.interval = interval
        self.timeout = timeout
        self._values: list[float] = []
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> float | None:
        """One reading, 0..1, or None (recorded in ``errors``) when the tool fails or prints no match."""
        report = run_smi(self.argv, self.timeout)
        match = self.pattern.search(report.output) if report.ok else None
        if match is None:
            self._errors.append(report.error or f"no match for {self.pattern.pattern!r} in {self.argv[0]} output")
            return None
        return float(match.group(1)) / 100.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self.sample_once()
            if value is not None:
                self._values.append(value)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._stop.clear()
        self._values, self._errors = [], []
        self._thread = threading.Thread(target=self._loop, name=f"hwdeploy-{self.argv[0]}", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + self.interval + 1)
        values = self._values
        return {"samples": len(values), "mean_busy": float(np.mean(values)) if values else 0.0,
                "max_busy": max(values) if values else 0.0, "tool": " ".join(self.argv),
                "errors": sorted(set(self._errors))[:5]}
