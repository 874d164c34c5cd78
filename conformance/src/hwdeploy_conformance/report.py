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
from hwdeploy_conformance import verdict as V
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


def summarize(results: list["CheckResult"], cases: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Counts, failures and the verdict (decided by :func:`hwdeploy_conformance.verdict.decide`).

    ``cases``: the run's planned (model, precision) pairs; by default those seen in ``results``.
    """
    statuses = Counter(r.status for r in results)
    outcomes = Counter(r.outcome for r in results)
    decided = V.decide(results, cases)
    unexpected = [r.id for r in results if r.outcome == C.FAIL]
    ran = sum(r.scope == C.MANDATORY and r.status not in (C.SKIPPED, C.BLOCKED) for r in results)
    summary = {
        "total": len(results), "statuses": dict(statuses), "outcomes": dict(outcomes),
        "unexpected_failures": unexpected, "expected_failures": [r.id for r in results if r.outcome == C.XFAIL],
        "unexpected_passes": [r.id for r in results if r.outcome == C.XPASS],
        # total: the mandatory checks the run had to pass (every case x every mandatory check), run or not.
        "mandatory": {"total": decided.planned_mandatory, "ran": ran, "passed": decided.passed_mandatory,
                      "pass_rate": (decided.passed_mandatory / decided.planned_mandatory
                                    if decided.planned_mandatory else None)},
        "verdict": decided.verdict,
        "conformant": decided.conformant,
        "missing_mandatory": list(decided.missing_mandatory),
        "verdict_detail": decided.to_dict(),
    }
    summary["lines"] = V.verdict_lines(summary)
    return summary


def exit_code(summary: dict[str, Any]) -> int:
    """0 when nothing failed unexpectedly, 1 otherwise (2 is reserved for usage/setup errors)."""
    return 1 if summary["unexpected_failures"] else 0


def build_report(run: "Conformance", *, argv: list[str] | None = None, error: str | None = None) -> dict[str, Any]:
    """The JSON report (schema in conformance/README.md)."""
    summary = summarize(run.results, [(m.name, p) for m in run.models for p in run.precisions])
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
        "host_compute": host_compute(run),
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


def host_compute(run: "Conformance") -> dict[str, Any]:
    """Whether the device computes on the host CPU by design, and who said so (the plugin's ``Device`` or the
    vendor config, which overrides it). It makes ``fallback_timing`` not applicable."""
    if run.config.host_compute is not None:
        return {"value": run.config.host_compute, "source": "vendor config [device] host_compute"}
    if run.device is None:
        return {"value": None, "source": "no device"}
    return {"value": bool(run.device.host_compute), "source": f"Device.host_compute declared by {run.device.plugin}"}


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
    properties = [("device", device), ("scope", report["scope"]), ("verdict", report["summary"]["verdict"]),
                  ("conformant", report["summary"]["conformant"]),
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
          "perf_accuracy": "perf-acc", "perf_caching": "cache", "fallback_utilization": "fb-util",
          "fallback_timing": "fb-time", "concurrency": "threads", "lifecycle": "life"}
#: Longest evidence line printed as it is; a longer one is cut at a clause boundary and says so.
EVIDENCE_CHARS = 400


def clip(text: str, limit: int = EVIDENCE_CHARS) -> str:
    """``text`` whole when it fits, else cut after the last complete clause ("; ", ". ", ", ") before ``limit``,
    saying how much is left: a console line is never cut in the middle of a word or a number."""
    if len(text) <= limit:
        return text
    cut = next((i for i in (text.rfind(sep, 0, limit) for sep in ("; ", ". ", ", ", " ")) if i > limit // 2), limit)
    return f"{text[:cut].rstrip(' ;,.')} [... {len(text) - cut} more characters in the report]"


def _cell(check: dict[str, Any] | None) -> str:
    if check is None:
        return ""
    if check["outcome"] == C.FAIL and check["status"] in _STATUS_MARKS:
        return _STATUS_MARKS[check["status"]]
    return _MARKS.get(check["outcome"], check["outcome"])


def _fits(console, renderable) -> bool:
    from rich.measure import Measurement

    # Measured without the console's width limit: the width the renderable needs to show every cell whole.
    wide = console.options.update(width=10**6, max_width=10**6)
    return Measurement.get(console, wide, renderable).maximum <= console.width


def _grid(report: dict[str, Any], console):
    """The cases x checks table when it fits the console, else checks x cases, else None (one line per case)."""
    from rich.table import Table

    names = list(report["checks_run"])
    by_case: dict[str, dict[str, Any]] = {}
    for check in report["checks"]:
        by_case.setdefault(f"{check['model']}/{check['precision']}", {})[check["check"]] = check
    wide = Table(show_lines=False)
    wide.add_column("model/precision", no_wrap=True)
    for name in names:
        wide.add_column(_SHORT.get(name, name), justify="center", no_wrap=True)
    for case, row in by_case.items():
        wide.add_row(case, *[_cell(row.get(name)) for name in names])
    if _fits(console, wide):
        return wide
    tall = Table(show_lines=False)
    tall.add_column("check", no_wrap=True)
    for case in by_case:
        tall.add_column(case, justify="center", no_wrap=True)
    for name in names:
        tall.add_row(name, *[_cell(row.get(name)) for row in by_case.values()])
    return tall if _fits(console, tall) else None


def print_summary(report: dict[str, Any], console=None) -> None:
    """A table (cases x checks, or checks x cases when that fits better), the failures with their evidence
    and the verdict in words. Nothing is cut: headers are never truncated (the layout changes instead) and
    long lines wrap."""
    from rich.console import Console
    from rich.markup import escape

    if console is None:
        console = Console()
        if not console.is_terminal:  # CI logs: don't squeeze the table into 80 columns
            console = Console(width=max(console.width, 140))
    checks = report["checks"]
    device = report["device"].get("id", report["requested_device"])
    plugin = report["plugin"]
    title = f"hwdeploy conformance: {device} ({plugin.get('name', '?')} {plugin.get('version', '') or ''})".rstrip()
    console.print(title, markup=False, highlight=False)
    hc = report.get("host_compute") or {}
    if hc:
        console.print(f"host_compute: {'yes' if hc.get('value') else 'no'} ({hc.get('source')})", markup=False,
                      highlight=False)
    grid = _grid(report, console)
    if grid is not None:
        console.print(grid)
    else:
        by_case: dict[str, list[str]] = {}
        for check in checks:
            by_case.setdefault(f"{check['model']}/{check['precision']}", []).append(
                f"{check['check']} {_cell(check)}")
        for case, cells in by_case.items():
            console.print(f"[bold]{escape(case)}[/]: " + ", ".join(cells), highlight=False)
    for check in (c for c in checks if c["outcome"] in (C.FAIL, C.XPASS)):
        message = check["message"] if check["message"].startswith(check["status"]) else \
            f"{check['status']}: {check['message']}"
        console.print(f"[bold]{escape(check['id'])}[/] {escape(message)}", highlight=False)
        for line in (check.get("evidence") or [])[:5]:
            console.print(f"    {clip(line)}", markup=False, highlight=False)
    summary = report["summary"]
    style = {V.CONFORMANT: "bold green", V.NOT_CONFORMANT: "bold red", V.INCOMPLETE: "bold yellow"}
    for i, line in enumerate(summary.get("lines") or V.verdict_lines(summary)):
        if i == 0:
            head, _, rest = line.partition(": ")
            console.print(f"[{style.get(summary['verdict'], 'bold')}]{escape(head)}[/]: {escape(rest)}",
                          highlight=False)
        else:
            console.print(line, markup=False, highlight=False)
    if report.get("error"):
        console.print(f"[bold red]error:[/] {escape(report['error'])}", highlight=False)
