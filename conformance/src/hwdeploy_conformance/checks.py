"""The catalogue of checks: names, scope, what each one needs. Implementations live in :mod:`.worker`.

Every check of one (model, precision) case runs, in this order, in one worker
process; a crash or hang ends only the check in progress, and the case
resumes in a fresh worker with the checks after it.
"""

from __future__ import annotations

from dataclasses import dataclass

MANDATORY = "mandatory"
FULL = "full"
SCOPES = (MANDATORY, FULL)

# Check statuses (what happened) ...
PASSED, FAILED, CRASHED, HUNG, ERROR, BLOCKED, SKIPPED = (
    "passed", "failed", "crashed", "hung", "error", "blocked", "skipped")
FAILING = (FAILED, CRASHED, HUNG, ERROR)
# ... and outcomes (what it means once expected failures are applied).
PASS, FAIL, XFAIL, XPASS, SKIP, NOT_RUN = "pass", "fail", "xfail", "xpass", "skip", "blocked"


@dataclass(frozen=True)
class CheckDef:
    name: str
    scope: str
    summary: str
    #: Blocked when the reference model check did not pass (the figures would mean nothing).
    needs_reference: bool = True
    #: Fallback evidence (is the work done on the device?): runs in every scope, and a failure of it
    #: makes the device not conformant whatever the check's scope (see :mod:`.verdict`).
    evidence: bool = False


CHECKS: tuple[CheckDef, ...] = (
    CheckDef("load", MANDATORY, "the plugin creates a predictor for the device (receipt recorded)", False),
    CheckDef("reference", MANDATORY, "the model can judge parity: reference outputs unit-scale and input-sensitive",
             False),
    CheckDef("parity", MANDATORY, "outputs match the CPU reference within the precision's tolerance (Hypothesis"
             " inputs across the batch range)"),
    CheckDef("fallback_receipt", MANDATORY, "the execution receipt shows execution on the requested device"
             " (actual device, per-op placement, fallback evidence)", False, evidence=True),
    CheckDef("determinism", MANDATORY, "same input twice (and after another input) gives the same outputs"
             " within the determinism bound"),
    CheckDef("bad_input", MANDATORY, "wrong shape/rank/dtype/count, NaN/Inf and empty inputs raise"
             " hwdeploy.InputError; the predictor keeps working", False),
    CheckDef("perf_accuracy", MANDATORY, "outputs sampled during a timed run match the accuracy-mode outputs"
             " (MLPerf TEST01)"),
    CheckDef("fallback_utilization", FULL, "the plugin's utilisation sampler shows the device busy during a timed"
             " run", False, evidence=True),
    CheckDef("fallback_timing", FULL, "independent of the plugin's word, unless a sampler corroborated: host-CPU"
             " time per run is not that of the CPU reference", False, evidence=True),
    CheckDef("concurrency", FULL, "N threads with clone()d predictors give the single-thread results"),
    CheckDef("lifecycle", FULL, "creating and closing predictors many times keeps RSS growth bounded", False),
    # Last: its back-to-back calls would otherwise run straight into the next check (a device that changes its
    # behaviour in tight loops, like the faultcheat fixture, would carry that state into it).
    CheckDef("perf_caching", FULL, "a timed loop on one input repeated is not much faster than on inputs never seen"
             " before: results are computed, not cached (MLPerf TEST04)", evidence=True),
)

BY_NAME = {c.name: c for c in CHECKS}
MANDATORY_CHECKS = tuple(c.name for c in CHECKS if c.scope == MANDATORY)
EVIDENCE_CHECKS = tuple(c.name for c in CHECKS if c.evidence)


def checks_for(scope: str, only: list[str] | None = None) -> list[CheckDef]:
    """Checks of ``scope``, optionally restricted to ``only``.

    "full" is every check; "mandatory" is the mandatory checks plus the fallback-evidence checks, which
    run in every scope because the verdict depends on them.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if only:
        unknown = set(only) - set(BY_NAME)
        if unknown:
            raise ValueError(f"unknown check(s) {sorted(unknown)}; known: {', '.join(BY_NAME)}")
    selected = [c for c in CHECKS if scope == FULL or c.scope == MANDATORY or c.evidence]
    if only:
        # load always runs: every other check needs the predictor it creates.
        selected = [c for c in selected if c.name in only or c.name == "load"]
    return selected
