"""``hwdeploy conformance --device npu:0,npu:1 [--jobs N]``: one lab machine, several devices, in parallel.

Each device gets its own run in its own process (``python -m hwdeploy_conformance --device D ...``), as if
it had been started alone: its own workers, crash and hang isolation, reports and exit code. Nothing is
shared between the runs but the machine, so one device crashing or hanging cannot touch another's verdict.
Each run writes ``REPORT-STEM.DEVICE.json`` (and ``.xml`` with ``--junit``), its console output goes to
``REPORT-STEM.DEVICE.log``, and ``hwdeploy conformance merge`` takes the reports as they are.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How often the parent looks at its children (seconds); each child bounds its own checks' time.
POLL_SECONDS = 0.2


@dataclass
class DeviceRun:
    device: str
    report: Path
    junit: Path | None
    log: Path
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None

    def summary(self) -> dict[str, Any]:
        """What the run's report says, or why there is none."""
        out: dict[str, Any] = {"device": self.device, "exit_code": self.exit_code, "report": str(self.report),
                               "log": str(self.log), "seconds": round((self.finished or 0) - (self.started or 0), 1)}
        try:
            report = json.loads(self.report.read_text())
        except (OSError, ValueError) as exc:
            out.update(verdict="no report", line=f"no report ({type(exc).__name__}); see {self.log}")
            return out
        summary = report.get("summary", {})
        out.update(verdict=summary.get("verdict", "?"), line=(summary.get("lines") or [""])[0],
                   error=report.get("error"))
        return out


def _stem(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", device)


def plan(args: argparse.Namespace, devices: list[str]) -> list[DeviceRun]:
    """One run per device, with paths beside ``--report`` (and ``--junit``) named after the device."""
    report = Path(args.report)
    junit = Path(args.junit) if args.junit else None
    runs = []
    for device in devices:
        stem = _stem(device)
        runs.append(DeviceRun(device, report.with_name(f"{report.stem}.{stem}{report.suffix or '.json'}"),
                              junit.with_name(f"{junit.stem}.{stem}{junit.suffix or '.xml'}") if junit else None,
                              report.with_name(f"{report.stem}.{stem}.log")))
    return runs


def child_argv(args: argparse.Namespace, run: DeviceRun) -> list[str]:
    """The command line of one device's run: every option of the parent, one device, its own paths."""
    argv = [sys.executable, "-m", "hwdeploy_conformance", "--device", run.device, "--report", str(run.report),
            "--models", *args.models, "--precision", args.precision, "--scope", args.scope, "--no-progress"]
    if run.junit:
        argv += ["--junit", str(run.junit)]
    for value in args.inputs or []:
        argv += ["--inputs", value]
    for flag, value in (("--backend", args.backend), ("--checks", args.checks), ("--config", args.config),
                        ("--expected-failures", args.expected_failures), ("--timeout", args.timeout),
                        ("--examples", args.examples), ("--seed", args.seed)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_devices(args: argparse.Namespace, devices: list[str]) -> int:
    """Run the suite on every device, at most ``--jobs`` at a time; print one line per device.

    Exit status: 2 if any run had a usage/setup error or wrote no report, else 1 if any had unexpected
    failures, else 0.
    """
    if any(not d for d in devices):
        print(f"hwdeploy conformance: --device {args.device!r}: an empty device name", file=sys.stderr)
        return 2
    if len(set(devices)) != len(devices):
        twice = sorted({d for d in devices if devices.count(d) > 1})
        print(f"hwdeploy conformance: --device names {', '.join(twice)} more than once: two runs on one device"
              " would measure each other", file=sys.stderr)
        return 2
    jobs = len(devices) if args.jobs is None else args.jobs
    if jobs < 1:
        print(f"hwdeploy conformance: --jobs must be at least 1, got {jobs}", file=sys.stderr)
        return 2
    runs = plan(args, devices)
    for run in runs:
        run.report.parent.mkdir(parents=True, exist_ok=True)
    pending, active = list(runs), []

    def stop(signum, frame):  # a CI timeout: each child writes the reports of what it finished, then exits
        for run in active:
            if run.process.poll() is None:
                run.process.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    print(f"hwdeploy conformance: {len(runs)} devices, {min(jobs, len(runs))} at a time", flush=True)
    try:
        while pending or active:
            while pending and len(active) < jobs:
                run = pending.pop(0)
                with open(run.log, "wb") as log:
                    run.process = subprocess.Popen(child_argv(args, run), stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL)
                run.started = time.time()
                active.append(run)
                print(f"  started {run.device} (log: {run.log})", flush=True)
            time.sleep(POLL_SECONDS)
            for run in [r for r in active if r.process.poll() is not None]:
                run.exit_code, run.finished = run.process.returncode, time.time()
                active.remove(run)
                print(f"  finished {run.device}: exit {run.exit_code}", flush=True)
    except KeyboardInterrupt:
        for run in active:
            try:
                run.exit_code = run.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.exit_code = run.process.wait()
            run.finished = time.time()
    finally:
        signal.signal(signal.SIGTERM, previous)
    summaries = [run.summary() for run in runs]
    for s in summaries:
        print(f"{s['device']}: {s['line'] or s['verdict']} (exit {s['exit_code']}, {s['seconds']} s;"
              f" report: {s['report']})", flush=True)
    codes = [s["exit_code"] for s in summaries]
    if any(c is None or c not in (0, 1) for c in codes) or any(s["verdict"] == "no report" for s in summaries):
        return 2
    return 1 if 1 in codes else 0
