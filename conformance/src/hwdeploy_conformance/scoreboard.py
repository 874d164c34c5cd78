"""``hwdeploy conformance merge REPORT... --out DIR``: one scoreboard for a whole lab.

Reads the JSON reports of many machines (and many plugin versions), rejects, with a reason, those that are
truncated, hand-edited (content digest), off-schema (``report.schema.json``) or missing mandatory checks, and
writes ``DIR/scoreboard.json`` and a self-contained ``DIR/index.html`` (inline CSS and JS, no network):

- a (machine / device) x (model / precision) matrix whose cells are one of :data:`STATES`, each cell linking to
  its checks' messages and evidence;
- the mandatory pass rate per device, the environment fingerprint per machine;
- new failures and new passes against a ``--baseline`` scoreboard (the lab's expected failures);
- the pass rate across plugin versions, and a staleness flag for reports older than ``--stale-days``.

Cheap to import: jsonschema is imported when a report is validated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from hwdeploy_conformance import checks as C
from hwdeploy_conformance import provenance as P
from hwdeploy_conformance import verdict as V

SCHEMA = "hwdeploy-conformance-scoreboard"
SCHEMA_VERSION = 1
REPORT_SCHEMA = "hwdeploy-conformance-report"
DEFAULT_STALE_DAYS = 14.0

PASS, FAIL, CRASHED, HUNG, SKIPPED, XFAIL, INCOMPLETE = (
    "pass", "fail", "crashed", "hung", "skipped", "expected-failure", "incomplete")
#: Cell (and check) states, kept distinct; the order is the legend's.
STATES = (PASS, FAIL, CRASHED, HUNG, SKIPPED, XFAIL, INCOMPLETE)
#: States that are failures when the baseline does not already expect them.
FAILING = (FAIL, CRASHED, HUNG)
STATE_HELP = {
    PASS: "every check that ran passed, and every mandatory check ran",
    FAIL: "a check failed (or errored) and no expected-failure entry covers it",
    CRASHED: "the worker died (signal/exit) during a check",
    HUNG: "a check ran past its timeout and was killed",
    SKIPPED: "nothing ran: the device declines this precision/model (the plugin's reason is the evidence);"
             " the run is not conformant as asked",
    XFAIL: "only expected failures (the device's expected-failures file) - CI green, not conformant",
    INCOMPLETE: "mandatory checks missing, blocked or skipped: no verdict can be given",
}
#: Rejection kinds (each rejected report names one, with the reason).
TRUNCATED, NOT_JSON, HAND_EDITED, NO_DIGEST, OFF_SCHEMA, MISSING_MANDATORY, NOT_A_REPORT, UNREADABLE = (
    "truncated", "not-json", "hand-edited", "no-digest", "schema", "missing-mandatory", "not-a-report", "unreadable")

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def mandatory_checks() -> tuple[str, ...]:
    """The suite's mandatory checks (every case of every report must have each one)."""
    return tuple(c.name for c in C.CHECKS if c.scope == C.MANDATORY)


def report_schema() -> dict[str, Any]:
    """The published JSON schema of a report (``hwdeploy_conformance/report.schema.json``)."""
    text = resources.files("hwdeploy_conformance").joinpath("report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


class Rejected(Exception):
    """A report that cannot be merged: ``kind`` (one of the rejection kinds) and the reason."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind, self.reason = kind, reason


# ---------------------------------------------------------------------------------------------------- reading
def _parse(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if not raw.strip():
        raise Rejected(TRUNCATED, f"the file is empty ({len(raw)} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(NOT_JSON, f"not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        end = len(text.rstrip())
        if exc.pos >= end - 1 or exc.msg.startswith("Unterminated string"):  # the text runs out mid-value
            raise Rejected(TRUNCATED, f"the JSON stops at byte {len(raw)} before the document is complete"
                                      f" ({exc.msg}): a partial copy or an interrupted upload") from None
        raise Rejected(NOT_JSON, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise Rejected(NOT_A_REPORT, f"not a hwdeploy conformance report (schema {found!r})")
    return data


def schema_errors(report: dict[str, Any], limit: int = 3) -> list[str]:
    """Schema violations of ``report``, as "at PATH: message" (empty when it is valid)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(report_schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    out = []
    for error in errors[:limit]:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        out.append(f"at {where}: {error.message[:200]}")
    if len(errors) > limit:
        out.append(f"... {len(errors) - limit} more")
    return out


def missing_mandatory(report: dict[str, Any]) -> dict[str, list[str]]:
    """{case "MODEL/PREC": [mandatory checks with no entry]} over every model x precision of the run."""
    present: dict[str, set[str]] = {}
    for check in report["checks"]:
        present.setdefault(f"{check['model']}/{check['precision']}", set()).add(check["check"])
    cases = [f"{m['name']}/{p}" for m in report["models"] for p in report["precisions"]] or list(present)
    missing = {}
    for case in cases:
        lacking = [name for name in mandatory_checks() if name not in present.get(case, set())]
        if lacking:
            missing[case] = lacking
    return missing


def load_report(path: str | Path, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """The report at ``path``, verified (JSON complete, digest, schema, mandatory checks), or :class:`Rejected`."""
    path = Path(path)
    report = _parse(path)
    if not isinstance(report.get(P.DIGEST_KEY), dict):
        raise Rejected(NO_DIGEST, "no content digest: not written by hwdeploy-conformance >= 0.1 (report.py), or"
                                  " the digest was removed")
    problem = P.verify_digest(report)
    if problem:
        raise Rejected(HAND_EDITED, problem)
    errors = schema_errors(report)
    if errors:
        raise Rejected(OFF_SCHEMA, f"does not follow report.schema.json: {'; '.join(errors)}")
    if not report["checks"]:
        raise Rejected(MISSING_MANDATORY, f"no checks ran (error: {report.get('error') or 'none'})")
    if report.get("error") and "interrupt" in report["error"] and not allow_incomplete:
        raise Rejected(TRUNCATED, f"the run was cut short: {report['error']}")
    missing = missing_mandatory(report)
    if missing and not allow_incomplete:
        names = sorted({n for lacking in missing.values() for n in lacking})
        cases = ", ".join(sorted(missing))
        raise Rejected(MISSING_MANDATORY, f"mandatory checks never ran: {', '.join(names)} (cases {cases};"
                                          f" checks_run {report['checks_run']}); rerun without --checks, or"
                                          f" merge with --allow-incomplete to show them as incomplete")
    return report


# ---------------------------------------------------------------------------------------------------- states
def check_state(check: dict[str, Any]) -> str:
    """The state of one check, in the scoreboard's vocabulary."""
    outcome, status = check["outcome"], check["status"]
    if outcome == C.XFAIL:
        return XFAIL
    if outcome == C.FAIL:
        return {C.CRASHED: CRASHED, C.HUNG: HUNG}.get(status, FAIL)
    if outcome in (C.PASS, C.XPASS):
        return PASS
    if outcome == C.SKIP:
        return SKIPPED
    return INCOMPLETE  # blocked (after a crash/hang/error) or unknown


def cell_state(checks: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(state, missing mandatory checks) of one (model, precision) case of one report.

    crashed > hung > fail > skipped (nothing ran) > incomplete (a mandatory check absent, blocked or skipped)
    > expected-failure > pass.
    """
    states = [check_state(c) for c in checks]
    ran = {c["check"] for c, s in zip(checks, states) if s not in (SKIPPED, INCOMPLETE)}
    missing = [name for name in mandatory_checks() if name not in ran]
    for state in (CRASHED, HUNG, FAIL):
        if state in states:
            return state, missing
    if not ran:
        return SKIPPED, missing
    if missing:
        return INCOMPLETE, missing
    if XFAIL in states:
        return XFAIL, missing
    return PASS, missing


def _created(report: dict[str, Any]) -> dt.datetime:
    text = report["created"]
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            stamp = dt.datetime.strptime(text.replace("Z", "+0000"), fmt)
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    raise Rejected(OFF_SCHEMA, f"unreadable 'created' time {text!r}")


def _version_key(version: str | None) -> tuple:
    try:
        from packaging.version import Version

        return (0, Version(version or "0"), "")
    except Exception:  # noqa: BLE001 - not PEP 440, or no packaging: numeric parts, then the text
        parts = tuple(int(p) for p in re.findall(r"\d+", version or ""))
        return (1, parts, version or "")


def _environment(report: dict[str, Any]) -> dict[str, Any]:
    env = report.get("environment")
    if env:
        return env
    # A report written before the fingerprint existed: what its host/versions fields say.
    versions = report.get("versions") or {}
    host = report.get("host") or {}
    return {"host": host.get("hostname"), "os": None, "kernel": None, "platform": host.get("platform"),
            "cpu": None, "cpus": host.get("cpus"), "machine": host.get("machine"), "python": versions.get("python"),
            "driver": {}, "runtime": {k.partition(":")[2]: v for k, v in versions.items() if k.startswith("runtime:")},
            "plugin": {"name": report["plugin"].get("name"), "version": report["plugin"].get("version")},
            "hwdeploy": versions.get("hwdeploy"), "id": "n/a"}


# ---------------------------------------------------------------------------------------------------- merging
@dataclass
class Merge:
    """The inputs and options of one merge; :meth:`scoreboard` builds the result."""

    paths: list[Path]
    stale_days: float = DEFAULT_STALE_DAYS
    baseline: dict[str, Any] | None = None
    baseline_path: str | None = None
    allow_incomplete: bool = False
    now: dt.datetime | None = None
    title: str = "hwdeploy conformance: lab scoreboard"
    accepted: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)

    def load(self) -> None:
        for path in self.paths:
            try:
                self.accepted.append((path, load_report(path, allow_incomplete=self.allow_incomplete)))
            except Rejected as exc:
                self.rejected.append({"path": str(path), "kind": exc.kind, "reason": exc.reason})
            except OSError as exc:
                self.rejected.append({"path": str(path), "kind": UNREADABLE, "reason": str(exc)})

    def scoreboard(self) -> dict[str, Any]:
        now = self.now or dt.datetime.now(dt.timezone.utc)
        entries = [self._entry(i, path, report, now) for i, (path, report) in enumerate(self.accepted)]
        # The matrix shows each (machine, device)'s newest report; the trend uses all of them.
        latest: dict[str, dict[str, Any]] = {}
        for entry in sorted(entries, key=lambda e: (e["created_ts"], e["index"])):
            latest[entry["row"]] = entry
        for entry in entries:
            entry["latest"] = latest[entry["row"]] is entry
        columns = sorted({key for e in latest.values() for key in e["cells"]},
                         key=lambda k: (k.split("/")[0], k.split("/")[1]))
        rows = []
        for key in sorted(latest):
            entry = latest[key]
            rows.append({k: entry[k] for k in ("row", "machine", "device", "plugin", "plugin_version", "report",
                                               "created", "age_days", "stale", "environment_id", "mandatory",
                                               "verdict", "report_verdict", "verdict_agrees", "cells")})
        board = {
            "schema": SCHEMA, "version": SCHEMA_VERSION, "title": self.title,
            "generated": now.strftime("%Y-%m-%dT%H:%M:%S%z"), "stale_days": self.stale_days,
            "states": {s: STATE_HELP[s] for s in STATES},
            "mandatory_checks": list(mandatory_checks()),
            "columns": columns,
            "rows": rows,
            "reports": [{k: e[k] for k in ("report", "path", "row", "machine", "device", "plugin", "plugin_version",
                                           "created", "age_days", "stale", "latest", "digest", "mandatory",
                                           "verdict", "environment_id", "scope")} for e in entries],
            "environments": self._environments(entries),
            "rejected": self.rejected,
            "trend": self._trend(entries),
            "counts": {s: sum(c["state"] == s for r in rows for c in r["cells"].values()) for s in STATES},
        }
        board["stale"] = [r["row"] for r in rows if r["stale"]]
        board["baseline"] = self._diff(board) if self.baseline is not None else None
        return board

    def _entry(self, index: int, path: Path, report: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
        env = _environment(report)
        machine = env.get("host") or report["host"]["hostname"]
        device = report["device"].get("id") or report["requested_device"]
        by_case: dict[str, list[dict[str, Any]]] = {}
        for check in report["checks"]:
            by_case.setdefault(f"{check['model']}/{check['precision']}", []).append(check)
        for case in missing_mandatory(report):  # cases that never reported anything (allowed incomplete runs)
            by_case.setdefault(case, [])
        cells, total, passed = {}, 0, 0
        for case, checks in by_case.items():
            state, missing = cell_state(checks)
            cell_checks = [{"check": c["check"], "scope": c["scope"], "status": c["status"], "outcome": c["outcome"],
                            "state": check_state(c), "message": c["message"], "evidence": list(c.get("evidence") or []),
                            "expected_failure": c.get("expected_failure"), "stderr_tail": c.get("stderr_tail") or "",
                            "duration_s": c.get("duration_s")} for c in checks]
            cells[case] = {"state": state, "missing_mandatory": missing, "checks": cell_checks,
                           "xpass": [c["check"] for c in checks if c["outcome"] == C.XPASS]}
            # Every case of the run counts, a precision the device declines (skipped) included: its mandatory
            # checks did not pass (the verdict rule: every mandatory check ran and passed for every case).
            names = mandatory_checks()
            total += len(names)
            passed += sum(1 for c in cell_checks if c["check"] in names and c["state"] == PASS)
        created = _created(report)
        age = (now - created).total_seconds() / 86400
        summary = report["summary"]
        # The row's verdict follows the cells (the verdict rules of the README); the report's own is kept.
        states = {c["state"] for c in cells.values()}
        if states & {FAIL, CRASHED, HUNG, XFAIL}:
            verdict = V.NOT_CONFORMANT
        elif states - {PASS}:  # incomplete or skipped cases: no verdict for the run as asked
            verdict = V.INCOMPLETE
        else:
            verdict = V.CONFORMANT
        return {
            "index": index, "report": index, "path": str(path), "row": f"{machine} / {device}", "machine": machine,
            "device": device, "plugin": report["plugin"].get("name"), "plugin_version": report["plugin"].get("version"),
            "created": report["created"], "created_ts": created.timestamp(), "age_days": round(age, 2),
            "stale": age > self.stale_days, "digest": report["digest"]["value"], "environment": env,
            "environment_id": env.get("id"), "scope": report["scope"], "verdict": verdict,
            "mandatory": {"total": total, "passed": passed, "pass_rate": passed / total if total else None,
                          "report_summary": summary.get("mandatory")},
            # The report's own verdict (hwdeploy_conformance.verdict spells it), and whether the cells agree.
            "report_verdict": summary.get("verdict") or (V.CONFORMANT if summary.get("conformant") else V.NOT_CONFORMANT),
            "verdict_agrees": verdict == (summary.get("verdict") or verdict),
            "cells": cells,
        }

    @staticmethod
    def _environments(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: dict[tuple, dict[str, Any]] = {}
        for entry in entries:
            env = entry["environment"]
            key = (entry["machine"], env.get("id"))
            item = seen.setdefault(key, {**env, "machine": entry["machine"], "arch": env.get("machine"), "reports": []})
            item["reports"].append(entry["report"])
        return sorted(seen.values(), key=lambda e: (e["machine"], str(e.get("id"))))

    @staticmethod
    def _trend(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Mandatory pass rate per plugin version, per (device kind, plugin): each machine's newest report of
        that version counts once."""
        groups: dict[tuple, dict[tuple, dict[str, Any]]] = {}
        for entry in sorted(entries, key=lambda e: (e["created_ts"], e["index"])):
            kind = entry["device"].split(":")[0]
            group = groups.setdefault((kind, entry["plugin"]), {})
            group[(entry["plugin_version"], entry["row"])] = entry
        trend = []
        for (kind, plugin), members in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            versions: dict[str, dict[str, Any]] = {}
            for (version, row), entry in members.items():
                point = versions.setdefault(version, {"plugin_version": version, "passed": 0, "total": 0,
                                                      "reports": [], "rows": []})
                point["passed"] += entry["mandatory"]["passed"]
                point["total"] += entry["mandatory"]["total"]
                point["reports"].append(entry["report"])
                point["rows"].append(row)
            points = sorted(versions.values(), key=lambda p: _version_key(p["plugin_version"]))
            for point in points:
                point["pass_rate"] = point["passed"] / point["total"] if point["total"] else None
            trend.append({"device_kind": kind, "plugin": plugin, "points": points})
        return trend

    def _diff(self, board: dict[str, Any]) -> dict[str, Any]:
        """Per check: failing now but not in the baseline (new failures), passing now but failing or expected to
        fail in the baseline (new passes)."""
        def states(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], str]:
            out = {}
            for row in rows:
                for case, cell in row["cells"].items():
                    for check in cell["checks"]:
                        out[(row["row"], f"{case}/{check['check']}")] = check["state"]
            return out

        before = states(self.baseline.get("rows", []))
        after = states(board["rows"])
        new_failures, new_passes = [], []
        for (row, check_id), state in sorted(after.items()):
            was = before.get((row, check_id))
            item = {"row": row, "id": check_id, "was": was or "absent", "now": state}
            if state in FAILING and was not in FAILING + (XFAIL,):
                new_failures.append(item)
            elif state == PASS and was in FAILING + (XFAIL,):
                new_passes.append(item)
        for row in board["rows"]:
            for case, cell in row["cells"].items():
                prefix = f"{case}/"
                cell["baseline"] = {
                    "was": next((r["cells"][case]["state"] for r in self.baseline.get("rows", [])
                                 if r["row"] == row["row"] and case in r["cells"]), "absent"),
                    "new_failures": [i["id"] for i in new_failures if i["row"] == row["row"] and i["id"].startswith(prefix)],
                    "new_passes": [i["id"] for i in new_passes if i["row"] == row["row"] and i["id"].startswith(prefix)],
                }
        return {"path": self.baseline_path, "generated": self.baseline.get("generated"),
                "new_failures": new_failures, "new_passes": new_passes}


def load_baseline(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a scoreboard.json (schema {data.get('schema')!r})")
    return data


def merge(paths: Iterable[str | Path], out: str | Path, *, baseline: str | Path | None = None,
          stale_days: float = DEFAULT_STALE_DAYS, allow_incomplete: bool = False,
          now: dt.datetime | None = None, title: str | None = None) -> dict[str, Any]:
    """Merge the reports at ``paths`` into ``out``/scoreboard.json and ``out``/index.html; return the board."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.glob("*.json") if f.name != "scoreboard.json")
        else:
            files.append(p)
    job = Merge(files, stale_days=stale_days, allow_incomplete=allow_incomplete, now=now,
                baseline=load_baseline(baseline) if baseline else None,
                baseline_path=str(baseline) if baseline else None)
    if title:
        job.title = title
    job.load()
    board = job.scoreboard()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "scoreboard.json.tmp"
    tmp.write_text(json.dumps(board, indent=1, allow_nan=False, default=str))
    tmp.replace(out / "scoreboard.json")
    (out / "index.html").write_text(render_html(board), encoding="utf-8")
    return board


def exit_status(board: dict[str, Any]) -> int:
    """0 all merged and no new failure; 1 a report rejected or a new failure against the baseline; 2 nothing
    merged."""
    if not board["reports"]:
        return EXIT_USAGE
    if board["rejected"] or (board["baseline"] and board["baseline"]["new_failures"]):
        return EXIT_PROBLEMS
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- HTML
CSS = """
:root { --pass:#1a7f37; --fail:#cf222e; --crashed:#82071e; --hung:#8250df; --skipped:#8c959f;
        --xfail:#bf8700; --incomplete:#0969da; --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0; padding: 20px 28px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.meta { color: var(--muted); margin-bottom: 10px; }
table { border-collapse: collapse; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
table.matrix td.cell { text-align: center; min-width: 92px; padding: 0; }
table.matrix td.cell a { display: block; padding: 6px 8px; color: #fff; font-weight: 600; text-decoration: none; }
table.matrix td.cell a:hover, table.matrix td.cell a:focus { outline: 3px solid #ffd33d; }
td.empty { background: repeating-linear-gradient(45deg, #f6f8fa, #f6f8fa 4px, #fff 4px, #fff 8px); }
.state-pass { background: var(--pass); } .state-fail { background: var(--fail); } .state-crashed { background: var(--crashed); }
.state-hung { background: var(--hung); } .state-skipped { background: var(--skipped); }
.state-expected-failure { background: var(--xfail); } .state-incomplete { background: var(--incomplete); }
.chip { display: inline-block; color: #fff; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 8px 0 12px; }
.legend label { cursor: pointer; user-select: none; } .legend small { color: var(--muted); }
.badge { display: inline-block; border-radius: 4px; padding: 0 5px; font-size: 11px; font-weight: 700; margin-left: 4px; }
.badge.stale { background: #fff8c5; color: #7d4e00; border: 1px solid #d4a72c; }
.badge.newfail { background: #ffebe9; color: var(--fail); border: 1px solid var(--fail); }
.badge.newpass { background: #dafbe1; color: var(--pass); border: 1px solid var(--pass); }
.badge.xpass { background: #fbefff; color: #8250df; border: 1px solid #8250df; }
td.cell .badge { background: #fff; }
.rate { display: inline-block; width: 120px; height: 10px; background: #eaeef2; border-radius: 5px; vertical-align: middle; margin-right: 6px; overflow: hidden; }
.rate > span { display: block; height: 100%; background: var(--pass); }
details.evidence { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; padding: 4px 10px; }
details.evidence[open] { background: #f6f8fa; } details.evidence.target { outline: 3px solid #ffd33d; }
details.evidence summary { cursor: pointer; font-weight: 600; }
details.evidence table { margin: 6px 0; width: 100%; background: #fff; }
pre { margin: 2px 0 0; max-height: 14em; overflow: auto; white-space: pre-wrap; word-break: break-word; font: 12px/1.35 ui-monospace, SFMono-Regular, Menlo, monospace; }
.rejected td { color: var(--fail); } .muted { color: var(--muted); }
.hidden-state { opacity: .15; }
svg.trend text { font: 11px system-ui, sans-serif; fill: var(--ink); }
.grid { display: flex; flex-wrap: wrap; gap: 18px; }
"""

JS = """
(function () {
  "use strict";
  function openEvidence(id) {
    if (!id) { return; }
    var el = document.getElementById(id);
    if (!el || el.tagName !== "DETAILS") { return; }
    var previous = document.querySelectorAll("details.evidence.target");
    for (var i = 0; i < previous.length; i++) { previous[i].classList.remove("target"); }
    el.open = true;
    el.classList.add("target");
    el.scrollIntoView({block: "center"});
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-evidence]") : null;
    if (!link) { return; }
    event.preventDefault();
    var id = link.getAttribute("data-evidence");
    if (history.replaceState) { history.replaceState(null, "", "#" + id); }
    openEvidence(id);
  });
  window.addEventListener("hashchange", function () { openEvidence(location.hash.slice(1)); });
  var boxes = document.querySelectorAll(".legend input[data-state]");
  for (var i = 0; i < boxes.length; i++) {
    boxes[i].addEventListener("change", function (event) {
      var state = event.target.getAttribute("data-state");
      var cells = document.querySelectorAll('td.cell[data-state="' + state + '"]');
      for (var j = 0; j < cells.length; j++) { cells[j].classList.toggle("hidden-state", !event.target.checked); }
    });
  }
  var data = JSON.parse(document.getElementById("scoreboard-data").textContent);
  document.body.setAttribute("data-rows", String(data.rows.length));
  document.body.setAttribute("data-ready", "true");
  openEvidence(location.hash.slice(1));
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def _chip(state: str) -> str:
    return f'<span class="chip state-{_e(state)}">{_e(state)}</span>'


def _evidence_id(r: int, c: int) -> str:
    return f"ev-{r}-{c}"


def _trend_svg(group: dict[str, Any]) -> str:
    points = [p for p in group["points"] if p["pass_rate"] is not None]
    width, height, pad, left = 360, 150, 34, 64
    n = max(len(points), 1)
    xs = [left + (width - left - pad) * (i / (n - 1) if n > 1 else 0.5) for i in range(len(points))]
    ys = [height - pad - (height - 2 * pad) * p["pass_rate"] for p in points]
    parts = [f'<svg class="trend" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
             f' aria-label="mandatory pass rate per plugin version">',
             f'<line x1="{left - 20}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#d1d9e0"/>',
             f'<line x1="{left - 20}" y1="{pad}" x2="{width - pad}" y2="{pad}" stroke="#d1d9e0" stroke-dasharray="3 3"/>',
             f'<text x="2" y="{pad + 4}">100%</text><text x="8" y="{height - pad + 4}">0%</text>']
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        parts.append(f'<polyline points="{path}" fill="none" stroke="#0969da" stroke-width="2"/>')
    for x, y, p in zip(xs, ys, points):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#0969da" data-version="{_e(p["plugin_version"])}"'
                     f' data-pass-rate="{p["pass_rate"]:.6f}"><title>{_e(p["plugin_version"])}: {_pct(p["pass_rate"])}'
                     f' ({p["passed"]}/{p["total"]})</title></circle>')
        parts.append(f'<text x="{x:.1f}" y="{height - pad + 16}" text-anchor="middle">{_e(p["plugin_version"])}</text>')
        parts.append(f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle">{_pct(p["pass_rate"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(board: dict[str, Any]) -> str:
    """The self-contained page: every style and script inline, the board's JSON embedded, no external URL."""
    columns = board["columns"]
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline';"
           " script-src 'unsafe-inline'; img-src data:\">",
           f"<title>{_e(board['title'])}</title><style>{CSS}</style></head><body>",
           f"<h1>{_e(board['title'])}</h1>",
           f"<div class='meta'>generated {_e(board['generated'])} · {len(board['reports'])} report(s) merged,"
           f" {len(board['rejected'])} rejected · {len(board['rows'])} device(s) · stale after"
           f" {board['stale_days']:g} days</div>"]
    # Legend.
    out.append("<div class='legend' id='legend'>")
    for state, help_text in board["states"].items():
        out.append(f"<label title='{_e(help_text)}'><input type='checkbox' checked data-state='{_e(state)}'> "
                   f"{_chip(state)} <small>{board['counts'].get(state, 0)}</small></label>")
    out.append("</div>")
    # Matrix.
    out.append("<h2 id='matrix-title'>Device × model × precision</h2><table class='matrix' id='matrix'><thead><tr>"
               "<th>machine / device</th><th>plugin</th><th>mandatory pass rate</th>")
    for col in columns:
        model, _, precision = col.partition("/")
        out.append(f"<th data-col='{_e(col)}'>{_e(model)}<br><span class='muted'>{_e(precision)}</span></th>")
    out.append("</tr></thead><tbody>")
    for r, row in enumerate(board["rows"]):
        m = row["mandatory"]
        width = 0 if m["pass_rate"] is None else round(100 * m["pass_rate"])
        rate_attr = "" if m["pass_rate"] is None else f"{m['pass_rate']:.6f}"
        stale = (f"<span class='badge stale' title='report is {row['age_days']:g} days old'>stale"
                 f" {row['age_days']:.0f}d</span>") if row["stale"] else ""
        out.append(f"<tr data-row='{_e(row['row'])}' data-stale='{str(row['stale']).lower()}'>"
                   f"<th>{_e(row['row'])}{stale}<br><span class='muted'>{_e(row['verdict'].replace('_', ' '))}</span></th>"
                   f"<td>{_e(row['plugin'])} {_e(row['plugin_version'])}</td>"
                   f"<td class='rate-cell' data-pass-rate='{rate_attr}'>"
                   f"<span class='rate'><span style='width:{width}%'></span></span>{_pct(m['pass_rate'])}"
                   f" <span class='muted'>({m['passed']}/{m['total']})</span></td>")
        for c, col in enumerate(columns):
            cell = row["cells"].get(col)
            if cell is None:
                out.append(f"<td class='empty' data-row='{_e(row['row'])}' data-col='{_e(col)}' data-state=''"
                           " title='not run on this device'></td>")
                continue
            base = cell.get("baseline") or {}
            badges = ""
            if base.get("new_failures"):
                badges += f"<span class='badge newfail' title='{_e(', '.join(base['new_failures']))}'>NEW FAIL</span>"
            if base.get("new_passes"):
                badges += f"<span class='badge newpass' title='{_e(', '.join(base['new_passes']))}'>NEW PASS</span>"
            if cell["xpass"]:
                badges += "<span class='badge xpass'>XPASS</span>"
            diff = "new-failure" if base.get("new_failures") else "new-pass" if base.get("new_passes") else ""
            ev = _evidence_id(r, c)
            out.append(f"<td class='cell state-{_e(cell['state'])}' data-row='{_e(row['row'])}' data-col='{_e(col)}'"
                       f" data-state='{_e(cell['state'])}' data-baseline='{diff}'"
                       f" data-stale='{str(row['stale']).lower()}'>"
                       f"<a href='#{ev}' data-evidence='{ev}' title='{_e(STATE_HELP[cell['state']])}'>"
                       f"{_e(cell['state'])}{badges}</a></td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    # Baseline diff.
    base = board.get("baseline")
    out.append("<h2>Against the baseline</h2>")
    if base is None:
        out.append("<p class='muted' id='baseline'>no baseline given (<code>--baseline scoreboard.json</code>)</p>")
    else:
        out.append(f"<div id='baseline' data-new-failures='{len(base['new_failures'])}'"
                   f" data-new-passes='{len(base['new_passes'])}'><p class='muted'>baseline {_e(base['path'])}"
                   f" (generated {_e(base['generated'])})</p><div class='grid'>")
        for title, items, cls in (("New failures", base["new_failures"], "newfail"),
                                  ("New passes", base["new_passes"], "newpass")):
            out.append(f"<div><h3>{title} <span class='badge {cls}'>{len(items)}</span></h3>")
            if items:
                out.append("<table><tr><th>machine / device</th><th>check</th><th>was</th><th>now</th></tr>")
                for item in items:
                    out.append(f"<tr class='diff-{cls}'><td>{_e(item['row'])}</td><td>{_e(item['id'])}</td>"
                               f"<td>{_chip(item['was']) if item['was'] in STATE_HELP else _e(item['was'])}</td>"
                               f"<td>{_chip(item['now'])}</td></tr>")
                out.append("</table>")
            else:
                out.append("<p class='muted'>none</p>")
            out.append("</div>")
        out.append("</div></div>")
    # Trend.
    out.append("<h2>Mandatory pass rate across plugin versions</h2><div class='grid' id='trend'>")
    for group in board["trend"]:
        out.append(f"<div class='trend-group' data-device-kind='{_e(group['device_kind'])}'"
                   f" data-plugin='{_e(group['plugin'])}'><h3>{_e(group['device_kind'])}"
                   f" <span class='muted'>({_e(group['plugin'])})</span></h3>{_trend_svg(group)}"
                   "<table><tr><th>plugin version</th><th>pass rate</th><th>devices</th></tr>")
        for p in group["points"]:
            out.append(f"<tr data-version='{_e(p['plugin_version'])}'><td>{_e(p['plugin_version'])}</td>"
                       f"<td>{_pct(p['pass_rate'])} ({p['passed']}/{p['total']})</td>"
                       f"<td>{_e(', '.join(p['rows']))}</td></tr>")
        out.append("</table></div>")
    out.append("</div>")
    # Reports and environments.
    out.append("<h2>Reports</h2><table id='reports'><tr><th>#</th><th>machine / device</th><th>plugin</th>"
               "<th>created</th><th>age</th><th>scope</th><th>mandatory</th><th>environment</th><th>file</th>"
               "<th>sha256</th></tr>")
    for rep in board["reports"]:
        stale = " <span class='badge stale'>stale</span>" if rep["stale"] else ""
        shown = "" if rep["latest"] else " <span class='muted'>(superseded)</span>"
        out.append(f"<tr data-report='{rep['report']}' data-stale='{str(rep['stale']).lower()}'><td>{rep['report']}</td>"
                   f"<td>{_e(rep['row'])}{shown}</td><td>{_e(rep['plugin'])} {_e(rep['plugin_version'])}</td>"
                   f"<td>{_e(rep['created'])}</td><td>{rep['age_days']:g} d{stale}</td><td>{_e(rep['scope'])}</td>"
                   f"<td>{_pct(rep['mandatory']['pass_rate'])}</td><td><code>{_e(rep['environment_id'])}</code></td>"
                   f"<td>{_e(Path(rep['path']).name)}</td><td><code>{_e(rep['digest'][:12])}</code></td></tr>")
    out.append("</table>")
    if board["rejected"]:
        out.append(f"<h2>Rejected reports ({len(board['rejected'])})</h2><table id='rejected' class='rejected'>"
                   "<tr><th>file</th><th>why</th><th>reason</th></tr>")
        for rej in board["rejected"]:
            out.append(f"<tr data-kind='{_e(rej['kind'])}'><td>{_e(rej['path'])}</td><td>{_e(rej['kind'])}</td>"
                       f"<td>{_e(rej['reason'])}</td></tr>")
        out.append("</table>")
    out.append("<h2>Environment fingerprints</h2><table id='environments'><tr><th>machine</th><th>OS</th>"
               "<th>kernel</th><th>CPU</th><th>driver</th><th>runtime</th><th>plugin</th><th>hwdeploy</th>"
               "<th>python</th><th>id</th></tr>")
    for env in board["environments"]:
        plugin = env.get("plugin") or {}
        kv = lambda d: ", ".join(f"{k} {v}" for k, v in (d or {}).items()) or "—"  # noqa: E731
        out.append(f"<tr data-machine='{_e(env['machine'])}'><td>{_e(env['machine'])}</td><td>{_e(env.get('os'))}</td>"
                   f"<td>{_e(env.get('kernel'))}</td><td>{_e(env.get('cpu'))} ×{_e(env.get('cpus'))} {_e(env.get('arch'))}</td>"
                   f"<td>{_e(kv(env.get('driver')))}</td><td>{_e(kv(env.get('runtime')))}</td>"
                   f"<td>{_e(plugin.get('name'))} {_e(plugin.get('version'))}</td><td>{_e(env.get('hwdeploy'))}</td>"
                   f"<td>{_e(env.get('python'))}</td><td><code>{_e(env.get('id'))}</code></td></tr>")
    out.append("</table>")
    # Evidence, one <details> per cell.
    out.append("<h2>Evidence</h2><div id='evidence'>")
    for r, row in enumerate(board["rows"]):
        for c, col in enumerate(columns):
            cell = row["cells"].get(col)
            if cell is None:
                continue
            missing = (f"<p>mandatory checks that did not run: {_e(', '.join(cell['missing_mandatory']))}</p>"
                       if cell["state"] == INCOMPLETE and cell["missing_mandatory"] else "")
            out.append(f"<details class='evidence' id='{_evidence_id(r, c)}' data-row='{_e(row['row'])}'"
                       f" data-col='{_e(col)}' data-state='{_e(cell['state'])}'><summary>{_e(row['row'])} — {_e(col)}:"
                       f" {_chip(cell['state'])}</summary>{missing}<table><tr><th>check</th><th>scope</th>"
                       "<th>state</th><th>status / outcome</th><th>message and evidence</th></tr>")
            for check in cell["checks"]:
                lines = "\n".join(check["evidence"])
                if check["stderr_tail"]:
                    lines += ("\n" if lines else "") + "--- output tail ---\n" + check["stderr_tail"][-2000:]
                xf = f"<br><span class='muted'>expected: {_e(check['expected_failure'])}</span>" \
                    if check["expected_failure"] else ""
                out.append(f"<tr data-check='{_e(check['check'])}' data-state='{_e(check['state'])}'>"
                           f"<td>{_e(check['check'])}</td><td>{_e(check['scope'])}</td><td>{_chip(check['state'])}</td>"
                           f"<td>{_e(check['status'])} / {_e(check['outcome'])}{xf}</td>"
                           f"<td><div class='message'>{_e(check['message'])}</div>"
                           + (f"<pre>{_e(lines)}</pre>" if lines else "") + "</td></tr>")
            out.append("</table></details>")
    out.append("</div>")
    data = json.dumps(board, allow_nan=False, default=str).replace("</", "<\\/")
    out.append(f"<script type='application/json' id='scoreboard-data'>{data}</script><script>{JS}</script>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``hwdeploy conformance merge``."""
    parser.description = ("merge conformance reports of many machines into DIR/scoreboard.json and a"
                          " self-contained DIR/index.html")
    parser.epilog = ("exit status: 0 every report merged and no new failure against the baseline; 1 a report"
                     " rejected (truncated, hand-edited, off-schema, missing mandatory checks) or a new failure;"
                     " 2 nothing could be merged or bad usage")
    parser.add_argument("reports", nargs="+", metavar="REPORT", help="report JSON files (or folders of them)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--baseline", metavar="scoreboard.json", help="an earlier scoreboard: known failures")
    parser.add_argument("--stale-days", type=float, default=DEFAULT_STALE_DAYS, metavar="N",
                        help=f"flag reports older than N days (default {DEFAULT_STALE_DAYS:g})")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="merge reports missing mandatory checks (shown as incomplete) instead of rejecting them")
    parser.add_argument("--now", metavar="ISO-TIME", help="the time ages are measured from (default: now)")
    parser.add_argument("--title", help="page title")


def _parse_now(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def run(args: argparse.Namespace) -> int:
    """Run ``merge`` as ``args`` asks; print one line per rejected report; return the exit status."""
    try:
        board = merge(args.reports, args.out, baseline=args.baseline, stale_days=args.stale_days,
                      allow_incomplete=args.allow_incomplete, now=_parse_now(args.now), title=args.title)
    except (OSError, ValueError) as exc:
        print(f"hwdeploy conformance merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for rej in board["rejected"]:
        print(f"rejected {rej['path']}: {rej['kind']}: {rej['reason']}", file=sys.stderr)
    for row in board["rows"]:
        stale = f" STALE ({row['age_days']:.0f} days)" if row["stale"] else ""
        print(f"{row['row']}: mandatory {_pct(row['mandatory']['pass_rate'])} ({row['mandatory']['passed']}/"
              f"{row['mandatory']['total']}), {row['verdict']}{stale}")
    if board["baseline"]:
        for item in board["baseline"]["new_failures"]:
            print(f"NEW FAILURE {item['row']} {item['id']}: {item['was']} -> {item['now']}")
        for item in board["baseline"]["new_passes"]:
            print(f"new pass {item['row']} {item['id']}: {item['was']} -> {item['now']}")
    out = Path(args.out)
    print(f"merged {len(board['reports'])} report(s), rejected {len(board['rejected'])}:"
          f" {out / 'scoreboard.json'}, {out / 'index.html'}")
    return exit_status(board)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hwdeploy conformance merge")
    configure_parser(parser)
    return run(parser.parse_args(argv))
