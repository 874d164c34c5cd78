"""Reports: versioned JSON, JUnit XML and the terminal summary."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwdeploy_conformance import checks as C
from hwdeploy_conformance import provenance as P
from hwdeploy_conformance.config import DEFAULT_TOLERANCES

if TYPE_CHECKING:
    from hwdeploy_conformance.runner import CheckResult, Conformance

SCHEMA = "hwdeploy-conformance-report"
SCHEMA_VERSION = 1


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def summarize(results: list["CheckResult"]) -> dict[str, Any]:
    statuses = Counter(r.status for r in results)
    outcomes = Counter(r.outcome for r in results)
    mandatory = [r for r in results if r.scope == C.MANDATORY and r.status != C.SKIPPED]
    mandatory_passed = sum(r.status == C.PASSED for r in mandatory)
    unexpected = [r.id for r in results if r.outcome == C.FAIL]
    return {
        "total": len(results), "statuses": dict(statuses), "outcomes": dict(outcomes),
        "unexpected_failures": unexpected, "expected_failures": [r.id for r in results if r.outcome == C.XFAIL],
        "unexpected_passes": [r.id for r in results if r.outcome == C.XPASS],
        "mandatory": {"total": len(mandatory), "passed": mandatory_passed,
                      "pass_rate": mandatory_passed / len(mandatory) if mandatory else None},
        # Mandatory checks must all pass: an expected failure keeps CI green, not the device conformant.
        "conformant": bool(results) and mandatory_passed == len(mandatory) and not unexpected,
    }


def exit_code(summary: dict[str, Any]) -> int:
    """0 when nothing failed unexpectedly, 1 otherwise (2 is reserved for usage/setup errors)."""
    return 1 if summary["unexpected_failures"] else 0


def build_report(run: "Conformance", *, argv: list[str] | None = None, error: str | None = None) -> dict[str, Any]:
    """The JSON report (schema in conformance/README.md)."""
    summary = summarize(run.results)
    versions = {"hwdeploy": _version("hwdeploy"), "hwdeploy-conformance": _version("hwdeploy-conformance"),
                "paddlepaddle": _version("paddlepaddle") or _version("paddlepaddle-gpu"),
                "hypothesis": _version("hypothesis"), "numpy": _version("numpy"), "python": platform.python_version()}
    for case in run.cases:
        receipt = case.get("receipt") or {}
        for name, value in (receipt.get("runtime_versions") or {}).items():
            versions.setdefault(f"runtime:{name}", value)
    code = 2 if error else exit_code(summary)
    return {
        "schema": SCHEMA, "version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(run.started or time.time())),
        "duration_s": (run.finished or time.time()) - (run.started or time.time()),
        "command": argv if argv is not None else sys.argv,
        "host": {"hostname": P.lab_machine(), "platform": platform.platform(), "machine": platform.machine(),
                 "cpus": os.cpu_count()},
        "device": run.device.to_dict() if run.device else {"requested": run.device_arg},
        "requested_device": run.device_arg,
        "plugin": run.plugin,
        "versions": versions,
        "environment": P.environment(run.device.to_dict() if run.device else None, run.plugin, versions),
        "scope": run.scope,
        "precisions": run.precisions,
        "checks_run": [c.name for c in run.checks],
        "config": run.config.to_dict(),
        "default_tolerances": {k: v.to_dict() for k, v in DEFAULT_TOLERANCES.items()},
        "expected_failures_file": run.expected.to_dict(),
        "models": [m.to_dict() for m in run.models],
        "cases": run.cases,
        "checks": [r.to_dict() for r in run.results],
        "summary": summary,
        "error": error,
        "exit_code": code,
    }


def _strict(value: Any) -> Any:
    """Strict JSON: NaN/Infinity (e.g. the rel-L2 of a zero reference) become the strings "nan"/"inf"/"-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write the report atomically (a crash of this process never leaves half a report)."""
    from hwdeploy_conformance.worker import json_default

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = P.with_digest(_strict(json.loads(json.dumps(report, default=json_default))))  # merge checks it
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    os.replace(tmp, path)


def _clean(text: str) -> str:
    # XML 1.0 forbids most control characters (stderr tails may carry them).
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 32)


def write_junit(report: dict[str, Any], path: str | Path) -> None:
    """JUnit XML: one <testcase> per check; crashed/hung/error -> <error>, failed -> <failure>,
    skipped/blocked/expected failures -> <skipped>."""
    device = report["device"].get("id") or report["requested_device"]
    checks = report["checks"]
    counts = Counter()
    suite = ET.Element("testsuite", name=f"hwdeploy-conformance[{device}]", timestamp=report["created"],
                       hostname=report["host"]["hostname"], time=f"{report['duration_s']:.3f}")
    props = ET.SubElement(suite, "properties")
    properties = [("device", device), ("scope", report["scope"]), ("conformant", report["summary"]["conformant"]),
                  ("plugin", report["plugin"].get("name")), ("plugin_version", report["plugin"].get("version"))]
    properties += [(f"version:{k}", v) for k, v in report["versions"].items()]
    for key, value in properties:
        ET.SubElement(props, "property", name=str(key), value=str(value))
    if report.get("error"):
        case = ET.SubElement(suite, "testcase", classname=f"conformance.{device}", name="setup", time="0")
        ET.SubElement(case, "error", message=_clean(report["error"][:1000]), type="setup")
        counts["errors"] += 1
    for check in checks:
        counts["tests"] += 1
        case = ET.SubElement(suite, "testcase", classname=f"conformance.{device}.{check['model']}.{check['precision']}",
                             name=check["check"], time=f"{check['duration_s'] or 0:.3f}")
        body = "\n".join(check.get("evidence") or [])
        if check.get("stderr_tail"):
            body += "\n--- stderr tail ---\n" + check["stderr_tail"]
        message = _clean(check["message"] or check["status"])[:1000]
        outcome = check["outcome"]
        if outcome == C.XFAIL:
            ET.SubElement(case, "skipped", message=_clean(f"expected failure ({check['expected_failure']}):"
                                                          f" {check['status']}: {check['message']}")[:1000])
            counts["skipped"] += 1
        elif outcome in (C.SKIP, C.NOT_RUN):
            ET.SubElement(case, "skipped", message=message)
            counts["skipped"] += 1
        elif outcome == C.FAIL:
            tag = "failure" if check["status"] == C.FAILED else "error"
            element = ET.SubElement(case, tag, message=message, type=check["status"])
            element.text = _clean(body)
            counts["failures" if tag == "failure" else "errors"] += 1
        figures = json.dumps({"status": check["status"], "outcome": outcome, "figures": check["figures"]},
                             default=str)[:20000]
        ET.SubElement(case, "system-out").text = _clean(figures)
    for key in ("tests", "failures", "errors", "skipped"):
        suite.set(key, str(counts[key]))
    root = ET.Element("testsuites", name="hwdeploy-conformance")
    root.append(suite)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


_MARKS = {C.PASS: "[green]ok[/]", C.FAIL: "[bold red]FAIL[/]", C.XFAIL: "[yellow]xfail[/]",
          C.XPASS: "[magenta]XPASS[/]", C.SKIP: "[dim]-[/]", C.NOT_RUN: "[dim red]blk[/]"}
_STATUS_MARKS = {C.CRASHED: "[bold red]CRASH[/]", C.HUNG: "[bold red]HUNG[/]", C.ERROR: "[bold red]ERR[/]"}
_SHORT = {"reference": "ref", "fallback_receipt": "fb-rcpt", "determinism": "determ", "bad_input": "bad-in",
          "perf_accuracy": "perf-acc", "fallback_utilization": "fb-util", "fallback_timing": "fb-time",
          "concurrency": "threads", "lifecycle": "life"}


def print_summary(report: dict[str, Any], console=None) -> None:
    """A table (cases x checks) and the failures with their first line of evidence."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # CI logs: don't squeeze the table into 80 columns
            console = Console(width=max(console.width, 140))
    checks = report["checks"]
    names = [n for n in report["checks_run"]]
    table = Table(title=f"hwdeploy conformance: {report['device'].get('id', report['requested_device'])}"
                        f" ({report['plugin'].get('name', '?')} {report['plugin'].get('version', '')})",
                  show_lines=False)
    table.add_column("model/precision", no_wrap=True)
    for name in names:
        table.add_column(_SHORT.get(name, name), justify="center", no_wrap=True)
    by_case: dict[str, dict[str, Any]] = {}
    for check in checks:
        by_case.setdefault(f"{check['model']}/{check['precision']}", {})[check["check"]] = check
    for case, row in by_case.items():
        cells = []
        for name in names:
            check = row.get(name)
            if check is None:
                cells.append("")
            elif check["outcome"] == C.FAIL and check["status"] in _STATUS_MARKS:
                cells.append(_STATUS_MARKS[check["status"]])
            else:
                cells.append(_MARKS.get(check["outcome"], check["outcome"]))
        table.add_row(case, *cells)
    console.print(table)
    bad = [c for c in checks if c["outcome"] in (C.FAIL, C.XPASS)]
    for check in bad:
        message = check["message"] if check["message"].startswith(check["status"]) else \
            f"{check['status']}: {check['message']}"
        console.print(f"[bold]{check['id']}[/] {escape(message[:300])}", highlight=False)
        for line in (check.get("evidence") or [])[:5]:
            console.print(f"    {line[:200]}", markup=False, highlight=False)
    s = report["summary"]
    m = s["mandatory"]
    rate = f"{m['pass_rate']:.0%}" if m["pass_rate"] is not None else "n/a"
    verdict = "[bold green]CONFORMANT[/]" if s["conformant"] else "[bold red]NOT CONFORMANT[/]"
    console.print(f"{verdict}: mandatory {m['passed']}/{m['total']} passed ({rate}); outcomes {s['outcomes']};"
                  f" unexpected failures: {len(s['unexpected_failures'])}")
    if report.get("error"):
        console.print(f"[bold red]error:[/] {report['error']}", highlight=False)
