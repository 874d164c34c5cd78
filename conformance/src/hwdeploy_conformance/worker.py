"""The worker process: runs the checks of one (model, precision) case on the device.

Started by :mod:`.runner` as ``python -m hwdeploy_conformance.worker SPEC PROGRESS``.
It appends one JSON line per event to PROGRESS (``begin`` before a check,
``result`` after it) and flushes each line, so that when the device crashes
or hangs the process, the parent knows which check was running and keeps
every result already written. ``faulthandler`` prints the Python stack of
every thread on SIGSEGV/SIGABRT and on SIGUSR1 (sent by the parent before it
kills a hung worker): that stack is the evidence in the report.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hwdeploy_conformance.checks import BLOCKED, BY_NAME, ERROR, FAILED, PASSED, SKIPPED
from hwdeploy_conformance.config import LOW_PRECISIONS, CheckSettings, Tolerance
from hwdeploy_conformance.inputs import InputCase, InputMaker
from hwdeploy_conformance.detection import NmsSettings
from hwdeploy_conformance.metrics import compare_outputs, max_rel_l2, rms
from hwdeploy_conformance.trend import theil_sen


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _option_facts(options: dict[str, Any]) -> dict[str, Any]:
    """Options for the report: calibration data is described, not copied."""
    facts = dict(options)
    data = facts.get("calibration")
    if data is not None and not isinstance(data, (str, os.PathLike)):
        batches = data if isinstance(data, list) else [data]
        rows = sum(len(np.asarray(b[0] if isinstance(b, list) else b)) for b in batches)
        facts["calibration"] = f"{rows} rows of sample inputs in {len(batches)} batch(es)"
    return facts


@dataclass
class Outcome:
    status: str
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)


class Case:
    """Everything the checks of one case share: model, predictors, input maker, tolerance."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.precision: str = spec["precision"]
        self.settings = CheckSettings(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in spec["settings"].items()})
        self.tol = Tolerance(**spec["tolerance"])
        self.model_spec: dict[str, Any] = spec["model"]
        self.task: str | None = self.model_spec.get("task")
        self.nms = NmsSettings.of(self.model_spec.get("nms"))
        self.device_id: str = spec["device"]
        self.backend: str | None = spec.get("backend")
        self.dev = None
        self.device_record = None  # the hwdeploy.Device discovery reported
        self.reference_ok = spec.get("reference_ok", True)
        self.trained = False  # a zoo model trained on real data (set in setup)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        import hwdeploy
        from hwdeploy.sdk import paddle_inference as pi
        from hwdeploy.selection import select_devices
        from hwdeploy.contract.records import DeviceSpec

        sampler = None
        if self.model_spec.get("zoo"):
            from hwdeploy import zoo

            entry = zoo.get(self.model_spec["zoo"])
            self.model = entry.model
            self.trained = entry.trained
            sampler = lambda batch, seed: entry.sample_inputs(batch=batch, seed=seed)  # noqa: E731
            if entry.trained:  # real data: rows of the held-out test split (never trained or calibrated on)
                test_inputs, _labels = entry.test_split()
                sampler = lambda batch, seed: [  # noqa: E731
                    test_inputs[np.random.default_rng(seed).choice(len(test_inputs), batch, replace=False)]]
        else:
            self.model = hwdeploy.load_model((self.model_spec["program"], self.model_spec["params"]))
        # The reference is Paddle Inference on the CPU, whatever other "cpu" backends are installed.
        self.ref = hwdeploy.predictor(self.model, device="cpu", backend=pi.BACKEND,
                                      threads=self.settings.reference_threads)
        self.names = self.ref.output_names
        if self.model_spec.get("inputs_file"):  # real inputs the lab gave (the parent checked them already)
            from hwdeploy_conformance.inputs import file_sampler, load_inputs_file

            sampler = file_sampler(load_inputs_file(self.model_spec["inputs_file"], self.ref.inputs))
        # A quantized model is judged on the data it was made for: a trained model's parity draws only its
        # test rows at lower precision (noise images lie outside every calibrated range).
        self.maker = InputMaker(self.ref.inputs, tuple(self.model_spec["batch_range"]), sampler,
                                self.model_spec.get("inputs"), self.model_spec.get("dims", 8),
                                sample_only=self.trained and self.precision in LOW_PRECISIONS)
        self.device_record = select_devices(DeviceSpec.parse(self.device_id), hwdeploy.devices(), self.backend)[0]
        if self.spec.get("load_in_setup"):
            self.dev = self.create_device_predictor()

    def device_options(self) -> dict[str, Any]:
        options = dict(self.spec.get("device_options") or {})
        if self.precision != "fp32":
            options.setdefault("precision", self.precision)
        if self.precision == "int8" and "calibration" not in options and self.model_spec.get("zoo") \
                and not self.trained:
            # A trained zoo model calibrates on its own split (the plugins' default); a random-weight one on
            # sample inputs, so that everything but its accuracy (not judgeable) is still checked.
            top = self.maker.batch_range[1]
            options["calibration"] = [self.maker.make(InputCase(top, self.maker.distributions[0], 4242 + i))
                                      for i in range(4)]
        return options

    def not_judgeable(self) -> str:
        """Why this case's accuracy cannot be judged ("" when it can)."""
        if self.precision in LOW_PRECISIONS and self.model_spec.get("zoo") and not self.trained:
            return (f"not judgeable: {self.model_spec['zoo']} has random weights, and {self.precision} accuracy"
                    " means something only on a trained model (random weights do not quantize or round like"
                    " trained ones); run the trained zoo models (e.g. digits_cnn) at this precision")
        return ""

    def create_device_predictor(self):
        import hwdeploy

        return hwdeploy.predictor(self.model, device=self.device_id, fallback="allow", backend=self.backend,
                                  **self.device_options())

    def case(self, batch: int | None = None, seed: int = 0, distribution: str | None = None) -> InputCase:
        """A fixed input case (batch: the top of the range by default) for checks that need no search."""
        return InputCase(self.maker.batch_range[1] if batch is None else batch,
                         distribution or self.maker.distributions[0],
                         self.settings.seed * 1000 + seed)

    def compare(self, dev_out, ref_out) -> tuple[list[str], list[dict[str, Any]]]:
        return compare_outputs(dev_out, ref_out, self.tol, self.task, self.names, self.nms)

    def close(self) -> None:
        for p in (self.dev, getattr(self, "ref", None)):
            if p is not None:
                p.close()


# ---------------------------------------------------------------------- checks
def check_load(case: Case) -> Outcome:
    from hwdeploy.errors import HwdeployError

    started = time.perf_counter()
    try:
        case.dev = case.create_device_predictor()
    except (HwdeployError, ValueError, TypeError, RuntimeError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        if case.precision != "fp32" and "precision" in str(exc).lower():
            return Outcome(SKIPPED, f"the device does not support {case.precision}: {message}")
        return Outcome(FAILED, f"predictor creation failed: {message}", evidence=[traceback.format_exc(limit=3)])
    receipt = case.dev.receipt()
    figures = {"create_seconds": time.perf_counter() - started, "device": case.dev.device.to_dict(),
               "discovered_device": case.device_record.to_dict(), "receipt": receipt.to_dict(),
               "reference_receipt": case.ref.receipt().to_dict(), "options": _option_facts(case.device_options()),
               "inputs": [s.to_dict() for s in case.dev.inputs], "outputs": [s.to_dict() for s in case.dev.outputs]}
    return Outcome(PASSED, f"{receipt.plugin or '?'} {receipt.plugin_version} created a {receipt.backend} predictor"
                   f" on {case.dev.device.id}", figures)


def check_reference(case: Case) -> Outcome:
    lo, scale_hi = case.settings.unit_scale
    a = case.maker.make(case.case(seed=1))
    b = case.maker.make(case.case(seed=2))
    out_a, out_a2, out_b = case.ref.run(*a), case.ref.run(*a), case.ref.run(*b)
    problems, evidence = [], []
    scales = {}
    for name, out in zip(case.names, out_a):
        if out.dtype.kind == "f":
            scales[name] = rms(out)
            if not lo <= scales[name] <= scale_hi:
                problems.append(f"reference output {name!r} has RMS {scales[name]:.3g}, outside the unit-scale"
                                f" range [{lo:g}, {scale_hi:g}]: differences would drown in rounding noise"
                                " (re-initialise the model so activations are unit-scale)")
    sensitivity = max_rel_l2(out_b, out_a)
    if sensitivity < 1e-3:
        problems.append(f"reference outputs barely depend on the input (rel-L2 {sensitivity:.3g} between two"
                        " different inputs): parity would prove nothing")
    ref_repeat = max_rel_l2(out_a2, out_a)
    if ref_repeat > 0:
        evidence.append(f"the CPU reference itself differs by rel-L2 {ref_repeat:.3g} between two runs")
    figures = {"output_rms": scales, "input_sensitivity": sensitivity, "reference_repeat_rel_l2": ref_repeat,
               "batch": case.maker.batch_range[1], "distributions": case.maker.distributions}
    if problems:
        return Outcome(ERROR, "model rejected: " + "; ".join(problems), figures, evidence)
    return Outcome(PASSED, "reference outputs are unit-scale and input-sensitive", figures, evidence)


def check_parity(case: Case) -> Outcome:
    from hypothesis import HealthCheck, Phase, Verbosity, example, given, seed, settings

    why = case.not_judgeable()
    if why:
        return Outcome(SKIPPED, why, {"tolerance": case.tol.to_dict()})
    records: list[dict[str, Any]] = []

    def prop(input_case: InputCase) -> None:
        inputs = case.maker.make(input_case)
        record = {"case": input_case.to_dict(), "problems": [], "outputs": []}
        records.append(record)
        ref_out = case.ref.run(*inputs)
        try:
            dev_out = case.dev.run(*inputs)
        except Exception as exc:  # the device failing on valid input is a parity failure
            record["problems"] = [f"device raised {type(exc).__name__}: {exc}"]
            raise AssertionError(record["problems"][0]) from None
        record["problems"], record["outputs"] = case.compare(dev_out, ref_out)
        if record["problems"]:
            raise AssertionError("; ".join(record["problems"]))

    lo, hi = case.maker.batch_range
    test = given(input_case=case.maker.strategy())(prop)
    test = example(input_case=case.case(batch=lo))(test)
    test = settings(max_examples=case.settings.examples, deadline=None, database=None, derandomize=False,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink), report_multiple_bugs=False,
                    suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False)(test)
    test = seed(case.settings.seed)(test)
    failure = None
    try:
        test()
    except Exception as exc:  # AssertionError, or Hypothesis's Flaky when the device is not reproducible
        failure = records[-1] if records else {"problems": [f"{type(exc).__name__}: {exc}"]}
        if records and not records[-1]["problems"]:
            failure = dict(records[-1], problems=[f"{type(exc).__name__}: {str(exc)[:500]}"])
    if failure is None and not any(r["case"]["batch"] == hi for r in records):
        try:  # the top of the batch range is always covered
            prop(case.case(batch=hi, seed=7))
        except AssertionError:
            failure = records[-1]
    figures = _parity_figures(records, case)
    figures["tolerance"] = case.tol.to_dict()
    figures["tolerance_sources"] = case.spec.get("tolerance_sources", [])
    if failure is not None:
        figures["minimal_failing_example"] = failure
        evidence = [f"minimal failing input found: batch={failure['case']['batch']},"
                    f" distribution={failure['case']['distribution']}, seed={failure['case']['seed']}"]
        evidence += [f"  {p}" for p in failure["problems"]]
        if figures["failing_batches"] and figures["passing_batches"]:
            evidence.append(f"fails at batch sizes {figures['failing_batches']},"
                            f" passes at {figures['passing_batches']}")
        return Outcome(FAILED, "; ".join(failure["problems"]), figures, evidence)
    worst = figures["worst"]
    judged = []
    if "rel_l2" in worst or "worst_score_error" not in worst:
        judged.append(f"worst rel-L2 {worst.get('rel_l2', 0):.3g} (<= {case.tol.rel_l2:g})")
    if "worst_score_error" in worst:
        judged.append(f"detections matched by class and IoU, worst score error {worst['worst_score_error']:.3g}"
                      f" and box error {worst['worst_coordinate_error']:.3g} (<= {case.tol.max_abs:g}),"
                      f" {int(worst['excused_count'])} one-sided near a threshold")
    return Outcome(PASSED, f"{len(records)} input(s), batch sizes {figures['passing_batches']}: {'; '.join(judged)}",
                   figures)


def _parity_figures(records: list[dict[str, Any]], case: Case) -> dict[str, Any]:
    worst: dict[str, float] = {}
    for record in records:
        for fig in record["outputs"]:
            for key in ("rel_l2", "max_abs"):
                if key in fig:
                    worst[key] = max(worst.get(key, 0.0), fig[key])
            for key in ("cosine", "top1", "top5", "int_match"):
                if key in fig:
                    worst[key] = min(worst.get(key, 1.0), fig[key])
            for key in ("worst_score_error", "worst_coordinate_error", "excused_count"):  # detections
                if key in fig:
                    worst[key] = max(worst.get(key, 0.0), fig[key])
    failing = sorted({r["case"]["batch"] for r in records if r["problems"]})
    passing = sorted({r["case"]["batch"] for r in records if not r["problems"]})
    return {"examples": len(records), "worst": worst, "failing_batches": failing, "passing_batches": passing,
            "batch_range": list(case.maker.batch_range), "distributions": case.maker.distributions,
            "inputs": [r["case"] for r in records[:50]],
            "last_passing_figures": next((r["outputs"] for r in reversed(records) if not r["problems"]), [])}


def check_fallback_receipt(case: Case) -> Outcome:
    receipt = case.dev.receipt()  # read after the runs: some runtimes only know placement then
    reasons = receipt.fallback_reasons()
    off = receipt.off_device_ops()
    by_reason: dict[str, list[str]] = {}
    for op in off:
        by_reason.setdefault(op.reason or "unspecified", []).append(f"{op.op} x{op.count} on {op.device}")
    figures = {"requested": receipt.requested, "selected": receipt.selected, "actual": receipt.actual,
               "predictor_device": case.dev.device.id, "backend": receipt.backend, "ops_known": receipt.ops_known,
               "ops_total": sum(op.count for op in receipt.ops), "ops_off_device": sum(op.count for op in off),
               "off_device_ops_by_reason": by_reason, "fallback_evidence": receipt.fallback_evidence,
               "evidence": receipt.evidence, "receipt": receipt.to_dict()}
    evidence = list(reasons) + [f"runtime evidence: {e}" for e in receipt.evidence]
    if case.dev.device.id != receipt.actual:
        reasons.append(f"predictor.device is {case.dev.device.id} but the receipt says {receipt.actual}")
    if reasons:
        return Outcome(FAILED, "silent fallback: " + "; ".join(reasons), figures, evidence)
    placement = (f"{figures['ops_total']} op(s) all on {receipt.actual}" if receipt.ops_known
                 else "per-op placement not reported by the runtime")
    return Outcome(PASSED, f"runs on {receipt.actual} as requested ({placement})", figures, evidence)


def check_determinism(case: Case) -> Outcome:
    a = case.maker.make(case.case(seed=11))
    b = case.maker.make(case.case(batch=case.maker.batch_range[0], seed=12))
    first = case.dev.run(*a)
    second = case.dev.run(*a)
    case.dev.run(*b)
    third = case.dev.run(*a)
    back_to_back, after_other = max_rel_l2(second, first), max_rel_l2(third, first)
    figures = {"bound_rel_l2": case.tol.determinism, "back_to_back_rel_l2": back_to_back,
               "after_other_input_rel_l2": after_other, "batch": case.maker.batch_range[1]}
    problems = []
    if back_to_back > case.tol.determinism:
        problems.append(f"the same input run twice differs by rel-L2 {back_to_back:.3g}"
                        f" (bound {case.tol.determinism:g})")
    if after_other > case.tol.determinism:
        problems.append(f"the same input differs by rel-L2 {after_other:.3g} after another input ran in between"
                        f" (bound {case.tol.determinism:g})")
    if problems:
        return Outcome(FAILED, "nondeterministic: " + "; ".join(problems), figures, problems)
    return Outcome(PASSED, f"repeat runs within rel-L2 {max(back_to_back, after_other):.3g}"
                   f" (bound {case.tol.determinism:g})", figures)


def _bad_inputs(case: Case) -> list[tuple[str, Callable[[], Any]]]:
    good = case.maker.make(case.case(batch=case.maker.batch_range[0], seed=21))
    specs = case.dev.inputs
    bad: list[tuple[str, Callable[[], Any]]] = []

    def swap(i: int, array: np.ndarray) -> list[np.ndarray]:
        out = list(good)
        out[i] = array
        return out

    bad.append(("one input too many", lambda: case.dev.run(*good, good[0])))
    for i, (spec, array) in enumerate(zip(specs, good)):
        bad.append((f"{spec.name}: extra axis (rank {array.ndim + 1})",
                    lambda i=i, a=array: case.dev.run(*swap(i, a[None]))))
        bad.append((f"{spec.name}: empty batch", lambda i=i, a=array: case.dev.run(*swap(i, a[:0]))))
        wrong = np.float64 if array.dtype.kind != "f" or array.dtype == np.float32 else np.float32
        if array.dtype.kind in "iu":
            wrong = np.float32
        bad.append((f"{spec.name}: dtype {np.dtype(wrong).name} instead of {array.dtype}",
                    lambda i=i, a=array, w=wrong: case.dev.run(*swap(i, a.astype(w)))))
        static = [ax for ax, d in enumerate(spec.shape) if ax > 0 and d is not None and d > 0]
        if static:
            ax = static[0]
            shape = list(array.shape)
            shape[ax] += 1
            bad.append((f"{spec.name}: axis {ax} size {shape[ax]} instead of {array.shape[ax]}",
                        lambda i=i, a=array, s=tuple(shape): case.dev.run(*swap(i, np.resize(a, s)))))
        if array.dtype.kind == "f":
            for value in (np.nan, np.inf):
                def poisoned(i=i, a=array, v=value):
                    a = a.copy()
                    a.flat[a.size // 2] = v
                    return case.dev.run(*swap(i, a))
                bad.append((f"{spec.name}: contains {value}", poisoned))
    return bad


def check_bad_input(case: Case) -> Outcome:
    from hwdeploy.errors import InputError

    good = case.maker.make(case.case(batch=case.maker.batch_range[0], seed=21))
    before = case.dev.run(*good)
    results, problems = [], []
    for label, call in _bad_inputs(case):
        try:
            call()
        except InputError as exc:
            results.append({"input": label, "raised": "InputError", "message": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - anything else is the finding
            results.append({"input": label, "raised": type(exc).__name__, "message": str(exc)[:300]})
            problems.append(f"{label}: raised {type(exc).__name__} instead of hwdeploy.InputError ({str(exc)[:120]})")
            continue
        results.append({"input": label, "raised": None})
        problems.append(f"{label}: accepted without error")
    after = case.dev.run(*good)
    drift = max_rel_l2(after, before)
    poisoned, _ = case.compare(after, before)
    if poisoned:
        problems.append(f"after the bad inputs the predictor's outputs changed: {'; '.join(poisoned)}")
    figures = {"cases": results, "rel_l2_after": drift}
    if problems:
        return Outcome(FAILED, "; ".join(problems), figures, problems)
    return Outcome(PASSED, f"{len(results)} bad inputs raised InputError; the predictor still works", figures)


def _timed_loop(run: Callable[[int], Any], min_runs: int, min_seconds: float, max_seconds: float) -> tuple[int, float]:
    runs, started = 0, time.perf_counter()
    while True:
        run(runs)
        runs += 1
        elapsed = time.perf_counter() - started
        if (runs >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            return runs, elapsed


def check_perf_accuracy(case: Case) -> Outcome:
    """MLPerf TEST01: outputs sampled during a timed run must match accuracy-mode outputs.

    Accuracy mode's own parity is :func:`check_parity`'s job; this check only
    asks whether the device computes the same thing when it is being timed.
    A sampled output that is not identical (within the determinism bound) to
    accuracy mode's is accepted when it is within the parity tolerance of it.
    """
    s = case.settings
    lo, hi = case.maker.batch_range
    batch = (lo + hi + 1) // 2
    pool = [case.maker.make(case.case(batch=batch, seed=100 + i,
                                      distribution=case.maker.distributions[i % len(case.maker.distributions)]))
            for i in range(8)]
    accuracy = [case.dev.run(*x) for x in pool]  # accuracy mode: one input at a time
    rng = np.random.default_rng(s.seed)
    order = rng.permutation(np.resize(np.arange(len(pool)), 4096))
    sampled: list[tuple[int, int, list[np.ndarray]]] = []
    candidates = [0]

    def one(i: int) -> None:
        k = int(order[i % len(order)])
        out = case.dev.run(*pool[k])
        if rng.random() < s.perf_sample_fraction:  # then a reservoir: uniform over the whole run, bounded
            candidates[0] += 1
            if len(sampled) < s.perf_max_samples:
                sampled.append((i, k, out))
            else:
                j = int(rng.integers(candidates[0]))
                if j < s.perf_max_samples:
                    sampled[j] = (i, k, out)

    for i in range(5):  # warm-up, outside the timed window
        case.dev.run(*pool[i % len(pool)])
    runs, seconds = _timed_loop(one, s.perf_iterations, s.perf_seconds, max(10 * s.perf_seconds, 30.0))
    identical = within = 0
    mismatches = []
    sampled.sort(key=lambda item: item[0])
    for i, k, out in sampled:
        diff = max_rel_l2(out, accuracy[k])
        if diff <= case.tol.determinism:
            identical += 1
            continue
        problems, figs = case.compare(out, accuracy[k])
        if not problems:
            within += 1
            continue
        mismatches.append({"iteration": i, "input": k, "problems": problems, "outputs": figs,
                           "rel_l2_vs_accuracy_mode": diff})
    first_bad = mismatches[0]["iteration"] if mismatches else None
    figures = {"batch": batch, "pool": len(pool), "runs": runs, "seconds": seconds,
               "runs_per_second": runs / seconds if seconds else None, "sampled": len(sampled),
               "identical_to_accuracy_mode": identical, "within_tolerance_of_accuracy_mode": within,
               "mismatches": len(mismatches), "first_mismatch_iteration": first_bad, "examples": mismatches[:5]}
    if not sampled:
        return Outcome(ERROR, "no outputs were sampled during the timed run", figures)
    if mismatches:
        evidence = [f"timed-run iteration {m['iteration']} (input {m['input']}): {'; '.join(m['problems'])}"
                    for m in mismatches[:5]]
        return Outcome(FAILED, f"{len(mismatches)} of {len(sampled)} outputs sampled during the timed run"
                       f" ({runs} runs, {seconds:.2f}s) differ from the accuracy-mode outputs beyond tolerance;"
                       f" first at iteration {first_bad}", figures, evidence)
    return Outcome(PASSED, f"{len(sampled)} outputs sampled from {runs} timed runs match accuracy mode"
                   f" ({identical} identical, {within} within tolerance)", figures)


@dataclass
class SamplerProbe:
    """What the device's plugin offers for ``hwdeploy_utilization_sampler``: a sampler, or why there is none."""

    sampler: Any = None
    plugin: str = ""
    #: "ok", "no_hook" (no plugin implements the hook for this device) or "unavailable" (a hook exists but
    #: gave no sampler: it raised a HwdeployError with the reason, failed, or returned None).
    state: str = "no_hook"
    reason: str = ""

    def skip_message(self) -> str:
        if self.state == "no_hook":
            return f"no sampler hook: {self.reason}"
        return f"sampler unavailable: {self.reason}"


def _sampler(case: Case) -> SamplerProbe:
    """Ask the plugins for a sampler of the device under test.

    A plugin says its sampler is unavailable (its smi tool is missing, the driver refuses) by raising a
    ``hwdeploy.errors.HwdeployError`` (``BackendError``, ``DeviceNotFoundError``) with the reason, from the hook
    or from the sampler's ``start()``. Returning None from a hook the device's plugin implements is read as
    "unavailable, no reason given".
    """
    from hwdeploy.contract.manager import get_plugin_manager
    from hwdeploy.errors import HwdeployError

    pm = get_plugin_manager()
    hook = "hwdeploy_utilization_sampler"
    owner = case.device_record.plugin
    implementers = [impl.plugin_name for impl in getattr(pm.pm.hook, hook).get_hookimpls()]
    try:
        got = pm.call_first(hook, device=case.device_record)
    except HwdeployError as exc:
        return SamplerProbe(state="unavailable", plugin=owner,
                            reason=f"{owner}'s {hook} raised {type(exc).__name__}: {exc}")
    if got is not None:
        return SamplerProbe(got[1], got[0], "ok")
    errors = pm.hook_errors(hook)
    if owner in errors:
        return SamplerProbe(state="unavailable", plugin=owner, reason=f"{owner}'s {hook} failed: {errors[owner]}")
    if owner in implementers:
        return SamplerProbe(state="unavailable", plugin=owner,
                            reason=f"{owner}'s {hook} returned None for {case.device_record.id} without saying why"
                                   " (a plugin raises hwdeploy.errors.BackendError(reason) to say why)")
    return SamplerProbe(state="no_hook", plugin=owner,
                        reason=f"the {owner or '?'} plugin does not implement {hook}")


def check_fallback_utilization(case: Case) -> Outcome:
    from hwdeploy.errors import HwdeployError

    probe = _sampler(case)
    case.sampler_probe = probe
    if probe.sampler is None:
        return Outcome(SKIPPED, probe.skip_message(), {"sampler_state": probe.state, "reason": probe.reason})
    plugin, sampler = probe.plugin, probe.sampler
    x = case.maker.make(case.case(seed=31))
    try:
        sampler.start()
    except HwdeployError as exc:
        probe.state, probe.reason = "unavailable", f"{plugin}: {type(sampler).__name__}.start() raised" \
                                                   f" {type(exc).__name__}: {exc}"
        return Outcome(SKIPPED, probe.skip_message(), {"sampler_state": probe.state, "reason": probe.reason})
    try:
        runs, seconds = _timed_loop(lambda i: case.dev.run(*x), 10, case.settings.utilization_seconds, 30.0)
    finally:
        stats = sampler.stop()
    figures = {"sampler": f"{plugin}: {type(sampler).__name__}", "sampler_state": "ok", "runs": runs,
               "seconds": seconds, **stats}
    if not stats.get("samples"):
        return Outcome(ERROR, f"the {plugin} utilisation sampler returned no samples", figures)
    case.sampler_corroborated = True  # a reading of the device exists: fallback_timing has stronger evidence
    mean_busy = float(stats.get("mean_busy", 0.0))
    if mean_busy < case.settings.min_utilization:
        return Outcome(FAILED, f"device idle while the model ran {runs} times in {seconds:.2f}s: mean busy"
                       f" {mean_busy:.1%}, max {float(stats.get('max_busy', 0.0)):.1%} (minimum"
                       f" {case.settings.min_utilization:.0%}): the work ran elsewhere", figures,
                       [f"{plugin} sampler: " + ", ".join(f"{k} {v}" for k, v in stats.items())])
    return Outcome(PASSED, f"device busy {mean_busy:.0%} on average during {runs} runs", figures)


def host_compute(case: Case) -> tuple[bool, str]:
    """The device computes on the host by design: the vendor config's ``[device] host_compute`` when set, else
    the ``Device.host_compute`` its plugin declares."""
    if case.spec.get("host_compute") is not None:
        return bool(case.spec["host_compute"]), "vendor config [device] host_compute"
    return bool(case.device_record.host_compute), f"Device.host_compute declared by {case.device_record.plugin}"


def check_fallback_timing(case: Case) -> Outcome:
    """The only evidence that does not rest on the plugin's word: host-CPU seconds per run against the CPU
    reference's. The receipt's claims never switch it off; only a sampler reading of the device (taken by
    fallback_utilization in this worker), a host-compute device or the host CPU itself do."""
    receipt = case.dev.receipt()
    declared, source = host_compute(case)
    if case.device_record.reference or case.device_record.kind == "cpu":
        return Outcome(SKIPPED, "the device is the host CPU itself", {"host_compute": declared})
    if declared:
        return Outcome(SKIPPED, f"the device computes on the host CPU by design (host_compute, from {source})",
                       {"host_compute": declared, "host_compute_source": source})
    if getattr(case, "sampler_corroborated", False):
        return Outcome(SKIPPED, "a utilisation sampler reading of the device exists (fallback_utilization):"
                       " stronger evidence", {"host_compute": declared})
    probe = getattr(case, "sampler_probe", None)
    why = probe.skip_message() if probe else "fallback_utilization did not run in this worker"
    s = case.settings
    x = case.maker.make(case.case(seed=41))
    case.dev.run(*x), case.ref.run(*x)
    dev_cpu, ref_cpu, dev_wall, ref_wall = [], [], [], []
    for _ in range(s.timing_pairs):  # interleaved, so machine load hits both alike
        for predictor, cpu, wall in ((case.dev, dev_cpu, dev_wall), (case.ref, ref_cpu, ref_wall)):
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(3):
                predictor.run(*x)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    cpu_ratio = statistics.median(dev_cpu) / max(statistics.median(ref_cpu), 1e-9)
    wall_ratio = statistics.median(dev_wall) / max(statistics.median(ref_wall), 1e-9)
    figures = {"pairs": s.timing_pairs, "host_cpu_ratio": cpu_ratio, "wall_ratio": wall_ratio,
               "device_host_cpu_s": statistics.median(dev_cpu) / 3,
               "reference_host_cpu_s": statistics.median(ref_cpu) / 3,
               "device_wall_s": statistics.median(dev_wall) / 3, "reference_wall_s": statistics.median(ref_wall) / 3,
               "thresholds": {"host_cpu_ratio": s.timing_cpu_ratio, "wall_ratio": s.timing_wall_ratio},
               "host_compute": declared, "host_compute_source": source, "why_timing": why,
               "receipt_ops_known": receipt.ops_known}
    claim = ""
    if receipt.ops_known:
        off = receipt.off_device_ops()
        claim = (f"; the receipt agrees: {len(off)} op(s) off the device" if off
                 else " although the receipt claims complete per-op placement on the device")
    if cpu_ratio >= s.timing_cpu_ratio and wall_ratio >= s.timing_wall_ratio:
        return Outcome(FAILED, f"timing signature of a host-CPU computation: per run the device path burns"
                       f" {cpu_ratio:.2f}x the host CPU time of the CPU reference and takes {wall_ratio:.2f}x its wall"
                       f" time{claim} (heuristic; no sampler reading to tell otherwise: {why})", figures,
                       [f"host CPU s/run: device {figures['device_host_cpu_s']:.3g}, reference"
                        f" {figures['reference_host_cpu_s']:.3g}"])
    return Outcome(PASSED, f"host CPU time per run {cpu_ratio:.2f}x, wall {wall_ratio:.2f}x the CPU reference's",
                   figures)


def check_concurrency(case: Case) -> Outcome:
    s = case.settings
    lo, hi = case.maker.batch_range
    inputs = [case.maker.make(case.case(batch=lo + (i % (hi - lo + 1)), seed=50 + i))
              for i in range(s.concurrency_threads * s.concurrency_runs)]
    expected = [case.dev.run(*x) for x in inputs]
    try:
        clones = [case.dev.clone() for _ in range(s.concurrency_threads)]
    except Exception as exc:  # noqa: BLE001
        return Outcome(FAILED, f"clone() failed: {type(exc).__name__}: {exc}")
    barrier = threading.Barrier(len(clones))
    got: dict[int, list[np.ndarray]] = {}
    errors: list[str] = []

    def worker(t: int, predictor) -> None:
        try:
            barrier.wait()
            mine = list(range(t, len(inputs), len(clones)))
            for _ in range(2):  # twice through, so runs overlap whatever the speed
                for i in mine:
                    got[i] = predictor.run(*inputs[i])
        except Exception as exc:  # noqa: BLE001
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t, p)) for t, p in enumerate(clones)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in clones:
        p.close()
    problems = list(errors)
    worst = 0.0
    for i, out in sorted(got.items()):
        worst = max(worst, max_rel_l2(out, expected[i]))
        found, _ = case.compare(out, expected[i])
        problems += [f"input {i}: {p}" for p in found]
    figures = {"threads": len(clones), "runs": 2 * len(inputs), "worst_rel_l2_vs_single_thread": worst}
    if problems:
        return Outcome(FAILED, f"{len(problems)} problem(s) with {len(clones)} threads: {problems[0]}", figures,
                       problems[:10])
    return Outcome(PASSED, f"{len(clones)} threads x {2 * s.concurrency_runs} runs match the single-thread outputs"
                   f" (worst rel-L2 {worst:.3g})", figures)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def check_lifecycle(case: Case) -> Outcome:
    """Create, run and close predictors ``lifecycle_cycles`` times; judge the RSS *trend* after warm-up.

    An allocator pool or a cache that swings up and down is not a leak: the robust (Theil–Sen) slope of RSS
    over the cycles ignores swings, and the check fails only when even its 99% lower confidence bound is above
    ``lifecycle_max_slope_mb`` per cycle (or that slope over the measured cycles exceeds
    ``lifecycle_max_growth_mb``). The whole series is in the figures.
    """
    s = case.settings
    x = case.maker.make(case.case(batch=case.maker.batch_range[0], seed=61))
    first = None
    rss = []
    problems = []
    for cycle in range(s.lifecycle_cycles):
        predictor = case.create_device_predictor()
        out = predictor.run(*x)
        predictor.close()
        predictor.close()  # close() must be idempotent
        del predictor
        gc.collect()
        rss.append(_rss_mb())
        if first is None:
            first = out
        elif not problems:
            differs, _ = case.compare(out, first)
            if differs:
                problems.append(f"cycle {cycle}: a fresh predictor's output differs from the first one's: {differs[0]}")
    warmup = min(s.lifecycle_warmup, max(len(rss) - 2, 0))
    measured = rss[warmup:]
    trend = theil_sen(measured, x=range(warmup, len(rss)))
    span = max(len(measured) - 1, 1)
    figures = {"cycles": s.lifecycle_cycles, "warmup": warmup, "rss_mb": [round(v, 2) for v in rss],
               "slope_mb_per_cycle": trend.slope, "slope_lower_bound_mb_per_cycle": trend.lower,
               "slope_upper_bound_mb_per_cycle": trend.upper, "confidence": trend.confidence,
               "trend_growth_mb": trend.slope * span, "endpoint_growth_mb": measured[-1] - measured[0] if measured else 0,
               "rss_range_mb": [min(measured), max(measured)] if measured else [],
               "max_slope_mb": s.lifecycle_max_slope_mb, "max_growth_mb": s.lifecycle_max_growth_mb,
               "method": "Theil-Sen slope of RSS per cycle after warm-up; fails when its one-sided 99% lower bound"
                         " exceeds max_slope_mb, or that bound times the measured cycles exceeds max_growth_mb"}
    if trend.lower > s.lifecycle_max_slope_mb or trend.lower * span > s.lifecycle_max_growth_mb:
        problems.append(f"RSS grows {trend.slope:.2f} MiB per create/close cycle (Theil-Sen over {len(measured)}"
                        f" cycles after {warmup} warm-up; 99% lower bound {trend.lower:.2f} > bound"
                        f" {s.lifecycle_max_slope_mb:g} MiB/cycle or {s.lifecycle_max_growth_mb:g} MiB over the run):"
                        f" RSS {measured[0]:.0f} -> {measured[-1]:.0f} MiB")
    if problems:
        return Outcome(FAILED, "; ".join(problems), figures, problems)
    return Outcome(PASSED, f"{s.lifecycle_cycles} create/close cycles: RSS trend {trend.slope:+.2f} MiB/cycle"
                   f" (99% bounds {trend.lower:+.2f}..{trend.upper:+.2f}; bound {s.lifecycle_max_slope_mb:g}),"
                   f" range {figures['rss_range_mb'][0]:.0f}-{figures['rss_range_mb'][1]:.0f} MiB after warm-up",
                   figures)


def check_perf_caching(case: Case) -> Outcome:
    """MLPerf TEST04 analogue: a device that caches results by input must not inflate the throughput reported.

    Calls alternate between one input repeated and inputs never seen before (same batch and distribution,
    made outside the timed call); a device that computes takes about as long for both, one that looks results
    up answers the repeated input much faster. Only the ratio of the medians counts (load hits both alike).
    """
    s = case.settings
    lo, hi = case.maker.batch_range
    batch = (lo + hi + 1) // 2
    repeated = case.maker.make(case.case(batch=batch, seed=300))
    for _ in range(3):  # warm-up: the repeated input is now "known"
        case.dev.run(*repeated)
    case.dev.run(*case.maker.make(case.case(batch=batch, seed=301)))
    same, new, clock = [], [], time.perf_counter
    for i in range(s.caching_pairs):
        fresh = case.maker.make(case.case(batch=batch, seed=400 + i))
        for inputs, times in ((repeated, same), (fresh, new)) if i % 2 else ((fresh, new), (repeated, same)):
            start = clock()
            case.dev.run(*inputs)
            times.append(clock() - start)
    speedup = statistics.median(new) / max(statistics.median(same), 1e-9)
    figures = {"batch": batch, "pairs": s.caching_pairs, "median_repeated_ms": statistics.median(same) * 1e3,
               "median_new_ms": statistics.median(new) * 1e3, "repeated_speedup": speedup,
               "max_speedup": s.caching_max_speedup}
    if speedup > s.caching_max_speedup:
        return Outcome(FAILED, f"the repeated input runs {speedup:.1f}x faster than inputs never seen before (bound"
                       f" {s.caching_max_speedup}x): results are cached, so timed runs on repeated inputs overstate"
                       " the device's throughput", figures)
    return Outcome(PASSED, f"repeated input {speedup:.2f}x the speed of new inputs (bound {s.caching_max_speedup}x)",
                   figures)


CHECK_FUNCTIONS: dict[str, Callable[[Case], Outcome]] = {
    "load": check_load, "reference": check_reference, "parity": check_parity,
    "fallback_receipt": check_fallback_receipt, "determinism": check_determinism, "bad_input": check_bad_input,
    "perf_accuracy": check_perf_accuracy, "fallback_utilization": check_fallback_utilization,
    "fallback_timing": check_fallback_timing, "perf_caching": check_perf_caching, "concurrency": check_concurrency,
    "lifecycle": check_lifecycle,
}


# ---------------------------------------------------------------------- process
class Progress:
    def __init__(self, path: str):
        self.fh = open(path, "a", buffering=1)

    def emit(self, event: str, **data: Any) -> None:
        self.fh.write(json.dumps({"event": event, "t": time.time(), **data}, default=json_default) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


def run_case(spec: dict[str, Any], progress: Progress) -> None:
    case = Case(spec)
    progress.emit("begin", check="setup")
    try:
        case.setup()
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the parent decides
        progress.emit("setup_failed", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return
    _arm_faulthandler()  # again: importing Paddle installs its own signal handlers over ours
    progress.emit("setup_done")
    stop_reason = None
    reference_ok = case.reference_ok
    for name in spec["checks"]:
        if stop_reason is not None:
            progress.emit("result", check=name, status=stop_reason[0], message=stop_reason[1], figures={},
                          evidence=[], duration_s=0.0)
            continue
        if BY_NAME[name].needs_reference and not reference_ok:
            progress.emit("result", check=name, status=BLOCKED, message="blocked: the model was rejected by the"
                          " reference check", figures={}, evidence=[], duration_s=0.0)
            continue
        progress.emit("begin", check=name)
        started = time.perf_counter()
        try:
            outcome = CHECK_FUNCTIONS[name](case)
        except Exception as exc:  # noqa: BLE001 - a device raising mid-check fails that check only
            outcome = Outcome(FAILED, f"{type(exc).__name__} during the check: {str(exc)[:500]}",
                              evidence=[traceback.format_exc(limit=6)])
        progress.emit("result", check=name, status=outcome.status, message=outcome.message, figures=outcome.figures,
                      evidence=outcome.evidence, duration_s=time.perf_counter() - started)
        if name == "load":
            _arm_faulthandler()  # the device runtime may have installed signal handlers too
        if name == "load" and outcome.status != PASSED:
            status = SKIPPED if outcome.status == SKIPPED else BLOCKED
            stop_reason = (status, f"{'skipped' if status == SKIPPED else 'blocked'}: load {outcome.status}"
                           f" ({outcome.message[:200]})")
        if name == "reference":
            reference_ok = outcome.status == PASSED
    case.close()


def describe_zoo_models(names: list[str]) -> list[dict[str, Any]]:
    """For the parent (via run_probe): build/fetch zoo models and describe them without Paddle there."""
    from hwdeploy import zoo

    out = []
    for name in names:
        entry = zoo.get(name)
        model = entry.model
        out.append({"name": name, "zoo": name, "program": str(model.program), "params": str(model.params),
                    "format": model.format, "sha256": model.sha256, "task": entry.entry.task,
                    "batch_range": list(entry.entry.batch_range)})
    return out


def _arm_faulthandler() -> None:
    """Python stacks of all threads on SIGSEGV/SIGABRT/..., and on SIGUSR1 (the parent's "you are hung").

    ``enable()`` does nothing when faulthandler is already enabled, so disable
    first: that re-installs our handlers over the ones Paddle's glog put in.
    Paddle's own handler still runs after ours (faulthandler chains to it).
    """
    faulthandler.disable()
    faulthandler.enable(all_threads=True)
    faulthandler.unregister(signal.SIGUSR1)
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, progress_path = argv
    _arm_faulthandler()
    os.environ.setdefault("GLOG_minloglevel", "2")
    with open(spec_path) as fh:
        spec = json.load(fh)
    progress = Progress(progress_path)
    run_case(spec, progress)
    progress.emit("end")
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
