"""The verdict of a run, decided in one place (the rules are in conformance/README.md, "Verdict").

- ``conformant``: every mandatory check ran and passed, for every model and precision of the run, and
  no fallback-evidence check (``fallback_receipt``, ``fallback_utilization``, ``fallback_timing``) of
  any scope failed.
- ``not_conformant``: a mandatory check or a fallback-evidence check ran and did not pass (failed,
  crashed, hung, error), expected failures included: an expected failure keeps CI green, it does not
  certify the device.
- ``incomplete``: nothing failed that decides the verdict, but some mandatory checks did not run or were
  skipped or blocked (``--checks``, an unsupported precision, a blocked case, an interrupted or failed
  setup). Never conformant; the missing checks are named.

Other checks (``concurrency``, ``lifecycle``) failing does not change the verdict; it changes the exit
status (an unexpected failure) and the summary line names them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from hwdeploy_conformance import checks as C

if TYPE_CHECKING:
    from hwdeploy_conformance.runner import CheckResult

CONFORMANT, NOT_CONFORMANT, INCOMPLETE = "conformant", "not_conformant", "incomplete"
NOT_SELECTED = "not selected (--checks)"


@dataclass
class Verdict:
    verdict: str
    #: Mandatory checks that ran and did not pass (ids), with their status.
    failed_mandatory: dict[str, str] = field(default_factory=dict)
    #: Fallback-evidence checks of any scope that ran and did not pass.
    failed_evidence: dict[str, str] = field(default_factory=dict)
    #: Other checks that failed unexpectedly (they set the exit status, not the verdict).
    failed_other: dict[str, str] = field(default_factory=dict)
    #: Mandatory checks (ids) that did not run or did not get to pass, and why.
    missing_mandatory: dict[str, str] = field(default_factory=dict)
    planned_mandatory: int = 0
    passed_mandatory: int = 0

    @property
    def conformant(self) -> bool:
        return self.verdict == CONFORMANT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(results: Iterable["CheckResult"], cases: list[tuple[str, str]] | None = None) -> Verdict:
    """The verdict for ``results`` of a run whose (model, precision) cases are ``cases``.

    ``cases`` defaults to the cases seen in ``results``; pass the run's planned cases so that a case
    that never produced a result (an interrupted run) counts as missing.
    """
    results = list(results)
    if cases is None:
        cases = list(dict.fromkeys((r.model, r.precision) for r in results))
    by_id = {r.id: r for r in results}
    v = Verdict(INCOMPLETE)
    for model, precision in cases:
        for name in C.MANDATORY_CHECKS:
            check_id = f"{model}/{precision}/{name}"
            v.planned_mandatory += 1
            r = by_id.get(check_id)
            if r is None:
                v.missing_mandatory[check_id] = NOT_SELECTED
            elif r.status == C.PASSED:
                v.passed_mandatory += 1
            elif r.status in (C.SKIPPED, C.BLOCKED):
                v.missing_mandatory[check_id] = f"{r.status}: {_first_clause(r.message)}"
    for r in results:
        if r.status not in C.FAILING:
            continue
        status = r.status + (" (expected failure)" if r.outcome == C.XFAIL else "")
        if r.check in C.MANDATORY_CHECKS:
            v.failed_mandatory[r.id] = status
        elif C.BY_NAME[r.check].evidence:
            v.failed_evidence[r.id] = status
        elif r.outcome == C.FAIL:
            v.failed_other[r.id] = status
    if v.failed_mandatory or v.failed_evidence:
        v.verdict = NOT_CONFORMANT
    elif v.missing_mandatory or not cases:
        v.verdict = INCOMPLETE
    else:
        v.verdict = CONFORMANT
    return v


def _first_clause(message: str) -> str:
    message = message.split(": ", 1)[1] if message.startswith(("skipped: ", "blocked: ")) else message
    return message.split("; ")[0].strip() or "no reason given"


def _group(ids: dict[str, str]) -> list[str]:
    """"a, b for m/fp32, n/fp32 (reason)" phrases: checks grouped by reason and by the cases they share."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for check_id, reason in ids.items():
        model, precision, name = check_id.rsplit("/", 2)
        by_reason.setdefault(reason, {}).setdefault(f"{model}/{precision}", []).append(name)
    phrases = []
    for reason, cases in by_reason.items():
        by_checks: dict[tuple[str, ...], list[str]] = {}
        for case, names in cases.items():
            by_checks.setdefault(tuple(names), []).append(case)
        for names, case_ids in by_checks.items():
            phrases.append(f"{', '.join(names)} for {', '.join(case_ids)} ({reason})")
    return phrases


def _ids(failed: dict[str, str]) -> str:
    return ", ".join(f"{check_id} {status}" for check_id, status in failed.items())


def counts_in_words(counter: dict[str, int] | Counter, order: Iterable[str] = ()) -> str:
    """``{"pass": 3, "skip": 1}`` -> "3 passed, 1 skipped" (no Python dict in a console line)."""
    words = {C.PASS: "passed", C.FAIL: "failed", C.XFAIL: "failed as expected", C.XPASS: "passed unexpectedly",
             C.SKIP: "skipped", C.NOT_RUN: "blocked"}
    keys = [k for k in order if counter.get(k)] + sorted(k for k in counter if k not in order and counter[k])
    return ", ".join(f"{counter[k]} {words.get(k, k)}" for k in keys) or "no checks"


OUTCOME_ORDER = (C.PASS, C.FAIL, C.XFAIL, C.XPASS, C.SKIP, C.NOT_RUN)


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """The summary in words: the verdict first, then what decided it. Never "NOT CONFORMANT" beside a
    100% pass rate: a not-conformant line names the checks that failed."""
    v = summary["verdict_detail"]
    m = summary["mandatory"]
    lines = []
    if summary["verdict"] == CONFORMANT:
        lines.append(f"CONFORMANT: all {m['total']} mandatory checks passed and no fallback evidence failed")
    elif summary["verdict"] == NOT_CONFORMANT:
        parts = []
        if v["failed_mandatory"]:
            parts.append(f"mandatory check(s) failed: {_ids(v['failed_mandatory'])}")
        if v["failed_evidence"]:
            parts.append(f"fallback evidence failed: {_ids(v['failed_evidence'])}")
        lines.append("NOT CONFORMANT: " + "; ".join(parts))
    else:
        missing = v["missing_mandatory"]
        if missing:
            lines.append(f"INCOMPLETE (not conformant): {len(missing)} of {m['total']} mandatory check(s) did not"
                         f" run or pass: {'; '.join(_group(missing))}")
        else:
            lines.append("INCOMPLETE (not conformant): no case ran")
    if v["failed_other"]:
        lines.append(f"other unexpected failures (exit status 1, no effect on the verdict): {_ids(v['failed_other'])}")
    if summary["verdict"] != INCOMPLETE and v["missing_mandatory"]:  # not conformant anyway; say what else is missing
        lines.append(f"also not run: {'; '.join(_group(v['missing_mandatory']))}")
    lines.append(f"checks: {counts_in_words(summary['outcomes'], OUTCOME_ORDER)}")
    return lines
