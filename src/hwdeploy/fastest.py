"""``device="auto:fastest"``: time the candidate backends on this model and keep the fastest correct one.

Plain ``device="auto"`` follows plugin priority and never runs the model to
choose. ``auto:fastest`` does the work once per model, input shape and
machine:

1. candidates: every available ``cpu`` device (Paddle Inference, ONNX Runtime,
   OpenVINO...) plus any other available device with priority >= 0;
2. each candidate is created (fail-closed: one that falls back is skipped),
   run on the sample inputs and compared with the Paddle Inference CPU
   reference (relative L2 error <= 1e-4 for fp32);
3. the survivors are timed in rounds, in rotating order: per round and
   candidate, a short idle pause (the previous runtime's worker threads keep
   spinning for up to 200 ms and would slow whichever runs next), warm-up
   calls, then ``runs`` timed calls; the outputs of the *timed* calls are
   checked again, so a backend accurate only on its first call is still
   caught;
4. the fastest one that passed parity wins. The decision is cached on disk
   (key: model sha256, input shapes/dtypes, candidate backends and versions,
   options, machine) and recorded in ``receipt.selection``: every candidate's
   median latency, relative error and why any was rejected.

A backend that fails parity is never chosen, however fast.

**Precision within an accuracy budget.** ``accuracy="fp32"`` (the default)
considers fp32 only. ``accuracy="bf16"`` adds bf16 candidates, ``"int8"`` bf16
and int8 ones (post-training quantization with ``calibration=``, default: a
trained zoo model's calibration split); a float is a relative-L2 budget that
lets every precision compete. A lower-precision candidate is then judged on
*held-back* inputs (``accuracy_inputs=``/``accuracy_labels=``, default: a
trained zoo model's test split; never the calibration data) against the fp32
Paddle reference: relative L2 within :data:`LOW_PRECISION_REL_L2` (or the float
budget) and, for classifiers, top-1 agreement >= 99% and, where labels exist,
an accuracy drop of at most 1 point. Every candidate's verdict and figures are
in ``receipt.selection``; a backend that refuses a precision says why there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

from hwdeploy.sdk.cache import cache_dir, cache_key
from hwdeploy.contract.records import Device, DeviceSpec
from hwdeploy.errors import DeviceNotFoundError, HwdeployError, InputError, OptionError
from hwdeploy.contract.model import Model, ModelLike, load_model, model_io
from hwdeploy.contract.manager import get_plugin_manager
from hwdeploy.contract.predictor import Predictor
from hwdeploy.selection import create_on, hwdeploy_version
from hwdeploy.sdk.hostinfo import machine_fingerprint
from hwdeploy.sdk.inputs import random_inputs
from hwdeploy.sdk.options import Option, OptionSchema

log = logging.getLogger("hwdeploy")

SPEC = DeviceSpec("auto", mode="fastest")
#: Largest relative L2 error against the CPU reference that passes, by output dtype.
TOLERANCES = {"float32": 1e-4, "float64": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}
DEFAULT_TOLERANCE = 1e-4
DECISION_VERSION = 2  # 2: candidates are (backend, precision) pairs
#: Idle seconds before each candidate's timed block (see ``fastest_predictor``).
SETTLE_S = 0.22
#: ``accuracy=`` named budgets -> the precisions a candidate may run in.
BUDGET_PRECISIONS = {"fp32": ("fp32",), "bf16": ("fp32", "bf16"), "int8": ("fp32", "bf16", "int8")}
#: Largest relative L2 error of a lower-precision candidate against the fp32 reference (the conformance suite's
#: model-level rows for bf16 and int8).
LOW_PRECISION_REL_L2 = {"bf16": 5e-2, "int8": 1e-1}
#: Classifiers at lower precision: top-1 agreement with the fp32 reference, and the accuracy they may lose.
MIN_TOP1_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01
#: Held-back rows run per call.
HELD_BACK_CHUNK = 64
#: Options the reference is re-created with when it rejects the caller's (backend-specific) ones.
_PORTABLE_OPTIONS = ("threads",)
#: ``device="auto:fastest"``'s own options; the rest go to every candidate backend.
OPTIONS = OptionSchema("auto:fastest", [
    Option("sample_inputs", (list, tuple, dict, np.ndarray), None, "inputs to time and check (default: the zoo's sample batch,"
           " else random inputs of the model's specs)"),
    Option("rounds", int, 5, "timed rounds per candidate", minimum=1, maximum=1000, nullable=False),
    Option("runs", int, 5, "timed calls per round", minimum=1, maximum=10_000, nullable=False),
    Option("warmup", int, 2, "untimed calls before each round", minimum=0, maximum=1000, nullable=False),
    Option("settle", (int, float), SETTLE_S, "idle seconds before each candidate (spinning pools park)",
           minimum=0, maximum=5, nullable=False),
    Option("refresh", bool, False, "measure again instead of using the cached decision", nullable=False),
    Option("backends", (list, tuple), None, "only these backends are candidates (the reference still checks parity)"),
    Option("accuracy", (str, float), "fp32", "the accuracy budget: fp32, bf16 or int8 (the lowest precision a"
           " candidate may run in), or a relative L2 error every precision must stay within", nullable=False),
    Option("calibration", object, None, "int8 candidates' calibration data (default: a trained zoo model's"
           " calibration split)"),
    Option("accuracy_inputs", (list, tuple, dict, np.ndarray), None, "held-back inputs lower-precision candidates are"
           " judged on (default: a trained zoo model's test split; never the calibration data)"),
    Option("accuracy_labels", np.ndarray, None, "labels of accuracy_inputs (a classifier may lose at most 1 point)"),
])


def candidate_devices(found: Sequence[Device], backends: Sequence[str] | None = None) -> list[Device]:
    """Every available cpu device plus available non-negative-priority devices (optionally of ``backends``)."""
    chosen = [d for d in found if d.available and (d.kind == "cpu" or d.priority >= 0)]
    if backends is not None:
        wanted = {backends} if isinstance(backends, str) else set(backends)
        chosen = [d for d in chosen if d.backend in wanted]
    return chosen


def parity(reference: Sequence[np.ndarray], outputs: Sequence[Any],
           tolerance: float | None = None) -> tuple[float, str]:
    """Worst relative L2 error of ``outputs`` against ``reference`` and why they fail ('' when they pass).

    Floating outputs: ``||out - ref|| / ||ref||`` against ``tolerance`` (default:
    :data:`TOLERANCES` by dtype); integer and bool outputs must match exactly.
    """
    if len(outputs) != len(reference):
        return math.inf, f"{len(outputs)} output(s) instead of {len(reference)}"
    worst = 0.0
    for i, (ref, out) in enumerate(zip(reference, outputs)):
        out = np.asarray(out)
        if out.shape != ref.shape:
            return math.inf, f"output {i}: shape {list(out.shape)} instead of {list(ref.shape)}"
        if ref.dtype.kind in "fc":
            ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
            norm = float(np.linalg.norm(ref64))
            diff = float(np.linalg.norm(out64 - ref64))
            err = diff / norm if norm > 0 else diff
            tol = tolerance if tolerance is not None else TOLERANCES.get(ref.dtype.name, DEFAULT_TOLERANCE)
            if not math.isfinite(err) or err > tol:  # NaN anywhere makes err NaN: a failure, never a pass
                return (err if math.isfinite(err) else math.inf), f"output {i}: relative L2 error {err:.3g} > {tol:g}"
            worst = max(worst, err)
        elif not np.array_equal(ref, out):
            wrong = int(np.count_nonzero(ref != out))
            return math.inf, f"output {i}: {wrong} of {ref.size} {ref.dtype} values differ (exact match required)"
    return worst, ""


def choose(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The record with the lowest median among those that passed parity (None if none did)."""
    passed = [r for r in records if r.get("parity") is True and r.get("median_ms") is not None]
    return min(passed, key=lambda r: r["median_ms"]) if passed else None


def fastest_predictor(model: ModelLike, fallback: str = "error", *, sample_inputs: Any = None, rounds: int = 5,
                      runs: int = 5, warmup: int = 2, settle: float = SETTLE_S, refresh: bool = False,
                      backends: Sequence[str] | None = None, accuracy: str | float = "fp32", calibration: Any = None,
                      accuracy_inputs: Any = None, accuracy_labels: Any = None, **options: Any) -> Predictor:
    """Measure the candidate backends for ``model`` and return a predictor on the fastest correct one.

    - ``sample_inputs``: the inputs to time and check (a list of arrays, or a
      dict by input name); default: the zoo's sample batch for zoo models,
      else random inputs of the model's input specs (batch 1).
    - ``rounds`` x (``warmup`` + ``runs``) calls per candidate; the median of
      the ``rounds * runs`` timed calls decides. ``settle`` seconds of idle
      time precede each candidate's block, so that the previous runtime's
      spinning worker threads (Intel OpenMP spins 200 ms by default, ONNX
      Runtime's pool spins too) have parked and do not slow it down.
    - ``refresh=True`` ignores a cached decision; ``backends`` restricts the
      candidates (the reference is still used for parity).
    - ``accuracy``, ``calibration``, ``accuracy_inputs``, ``accuracy_labels``:
      the precisions candidates may run in and how they are judged (module
      docstring).
    - other ``options`` (``threads``...) go to every candidate; one that
      rejects them is skipped and says why in ``receipt.selection``.
    """
    OPTIONS.check({"sample_inputs": sample_inputs, "rounds": rounds, "runs": runs, "warmup": warmup,
                   "settle": settle, "refresh": refresh, "backends": backends, "accuracy": accuracy,
                   "calibration": calibration, "accuracy_inputs": accuracy_inputs, "accuracy_labels": accuracy_labels})
    if "precision" in options:
        raise OptionError("auto:fastest chooses the precision itself: pass accuracy='fp32'|'bf16'|'int8' (or a"
                          " relative L2 budget) instead of precision=")
    precisions, budget = _budget(accuracy)
    model = load_model(model)
    found = get_plugin_manager().discover_devices()
    candidates = candidate_devices(found, backends)
    reference_device = next((d for d in found if d.available and d.reference), None)
    if reference_device is None:
        raise DeviceNotFoundError("auto:fastest needs the parity reference device (the built-in Paddle Inference CPU"
                                  " plugin, 'cpu') to check parity, and no plugin reports it available")
    if not candidates:
        raise DeviceNotFoundError(f"auto:fastest: no candidate device (backends={backends!r})")
    low = precisions != ("fp32",) or budget is not None
    calibration_data = _calibration(model, calibration) if "int8" in precisions else None
    held_back = _held_back(model, accuracy_inputs, accuracy_labels, calibration_data) if low else None
    inputs = sample_inputs if sample_inputs is not None else default_inputs(model)
    judged_by = (accuracy, calibration_data and calibration_data[1], held_back and held_back.sha256)
    key = _decision_key(model, inputs, candidates, options, judged_by) if inputs is not None else None
    if key and not refresh:
        cached = _use_cached(model, key, candidates, options, fallback, calibration_data)
        if cached is not None:
            return cached

    records: list[dict[str, Any]] = []
    live: list[tuple[Device, Predictor, dict[str, Any]]] = []
    expected: dict[int, tuple[list[np.ndarray], float | None, str]] = {}  # per candidate: what its timed calls must match
    reference, reference_is_candidate = _create_reference(model, reference_device, options, records)
    chosen = None
    try:
        if inputs is None:  # a legacy model without specs we can read: the reference's own specs
            inputs = random_inputs(reference.inputs)
            key = _decision_key(model, inputs, candidates, options, judged_by)
        ref_out = [np.asarray(o).copy() for o in _call(reference, inputs)]
        if held_back is not None:
            held_back.run_reference(reference)
        for device in candidates:
            for precision in precisions:
                record = {"device": device.id, "backend": device.backend, "plugin": device.plugin,
                          "precision": precision, "rel_l2_budget": _tolerance(precision, budget)}
                if device is reference_device and precision == "fp32":
                    if reference_is_candidate:
                        record.update(rel_l2=0.0, parity=True, reference=True)
                        if held_back is not None:
                            held_back.judge(record, reference, precision)
                        expected[id(record)] = (ref_out, None, "rel_l2")
                        live.append((device, reference, record))
                        records.append(record)
                    continue
                records.append(record)
                wanted = _precision_options(options, precision, calibration_data)
                predictor = _try(record, "create", lambda d=device, o=wanted: create_on(model, d, SPEC, "error", o))
                if predictor is None:
                    continue
                outputs = _try(record, "run", lambda p=predictor: _call(p, inputs))
                if precision == "fp32":  # the sample inputs' outputs must match the reference's
                    first_call_ok = outputs is not None and _parity_ok(record, ref_out, outputs, "first call",
                                                                       record["rel_l2_budget"])
                    expected[id(record)] = (ref_out, record["rel_l2_budget"], "rel_l2")
                else:  # judged on the held-back rows (sample inputs may lie far outside the calibrated range):
                    # here only shapes and finiteness count, and its timed calls must repeat this first answer
                    first_call_ok = outputs is not None and _parity_ok(record, ref_out, outputs, "first call",
                                                                       math.inf, "sample_rel_l2")
                    expected[id(record)] = ([np.asarray(o).copy() for o in outputs or []], DEFAULT_TOLERANCE,
                                            "rel_l2_vs_first_call")
                if not first_call_ok or (held_back is not None and not held_back.judge(record, predictor, precision)):
                    predictor.close()
                    continue
                live.append((device, predictor, record))
        _time(live, inputs, expected, rounds, runs, warmup, settle)
        best = choose(records)
        if best is None:  # only when the reference itself is not a candidate and nothing else passed
            raise DeviceNotFoundError("auto:fastest: no candidate passed parity: "
                                      + "; ".join(f"{r['device']} ({r['backend']}): {r.get('error')}" for r in records))
        chosen = next(p for _d, p, r in live if r is best)
        decision = {
            "mode": "fastest", "version": DECISION_VERSION, "key": key, "cached": False, "measured_at": time.time(),
            "inputs": [{"shape": list(a.shape), "dtype": str(a.dtype)} for a in _arrays(inputs)],
            "rounds": rounds, "runs": runs, "warmup": warmup, "settle_s": settle, "reference": f"{reference_device.id}/{reference_device.backend}",
            "accuracy": accuracy, "held_back": held_back.summary() if held_back is not None else None,
            "chosen": {k: best[k] for k in ("device", "backend", "plugin", "precision")}, "candidates": records,
        }
        _save_decision(key, decision)
    finally:
        for predictor in {id(p): p for p in [reference] + [p for _d, p, _r in live]}.values():
            if predictor is not chosen:
                predictor.close()
    return _finish(chosen, decision, fallback)


# ------------------------------------------------------------------ precision and the accuracy budget
def _budget(accuracy: str | float) -> tuple[tuple[str, ...], float | None]:
    """``accuracy=`` -> (the precisions candidates may run in, a relative-L2 budget or None)."""
    if isinstance(accuracy, str):
        if accuracy not in BUDGET_PRECISIONS:
            raise OptionError(f"auto:fastest: option 'accuracy' must be one of {list(BUDGET_PRECISIONS)} or a relative"
                              f" L2 budget in (0, 1), got {accuracy!r}")
        return BUDGET_PRECISIONS[accuracy], None
    if isinstance(accuracy, bool) or not 0 < accuracy < 1:
        raise OptionError(f"auto:fastest: a numeric accuracy budget is a relative L2 error in (0, 1), got {accuracy!r}")
    return BUDGET_PRECISIONS["int8"], float(accuracy)


def _tolerance(precision: str, budget: float | None) -> float | None:
    """The relative-L2 bound a candidate of ``precision`` must meet (None: fp32's, by output dtype)."""
    if budget is not None:
        return budget
    return LOW_PRECISION_REL_L2.get(precision)


def _precision_options(options: dict[str, Any], precision: str,
                       calibration_data: tuple[dict, str] | None) -> dict[str, Any]:
    if precision == "fp32":
        return options  # backends without a precision option (the reference) accept fp32 candidates unchanged
    extra = {"calibration": calibration_data[0]} if precision == "int8" and calibration_data else {}
    return {**options, "precision": precision, **extra}


def _calibration(model: Model, calibration: Any) -> tuple[dict[str, np.ndarray], str]:
    """Checked calibration data ({input name: rows}) and its sha256, resolved once for every int8 candidate."""
    from hwdeploy.sdk import calibration as calib

    specs = calib.input_specs(model)
    names = [s[0] for s in specs]
    if calibration is None:
        from hwdeploy import zoo

        calibration = zoo.calibration_of(model)
    arrays = calib.resolve_calibration(model, calibration, specs, "auto:fastest")
    return dict(zip(names, arrays)), calib.calibration_sha256(names, arrays)


def _held_back(model: Model, inputs: Any, labels: Any, calibration_data: tuple[dict, str] | None) -> "HeldBack":
    if inputs is None:
        zoo_name = model.metadata.get("zoo") if model.metadata else None
        from hwdeploy import zoo

        if zoo_name not in zoo.TRAINED:
            raise OptionError(
                "auto:fastest: a lower-precision budget needs held-back inputs to judge candidates on"
                " (accuracy_inputs=, with accuracy_labels= for a classifier; never the calibration data);"
                " only the zoo's trained models bring their own test split")
        inputs, labels = zoo.get(zoo_name).test_split()
        classifier = True
    else:
        classifier = labels is not None or (model.metadata or {}).get("task") == "classification"
    held = HeldBack(_arrays(inputs), labels, classifier)
    if calibration_data is not None and held.same_rows_as(calibration_data[0]):
        raise OptionError("auto:fastest: accuracy_inputs are the calibration data; candidates must be judged on"
                          " inputs they were not calibrated on")
    return held


class HeldBack:
    """Held-back inputs (and labels) every candidate of a lower-precision budget is judged on."""

    def __init__(self, arrays: list[np.ndarray], labels: Any, classifier: bool):
        rows = {len(a) for a in arrays}
        if len(rows) != 1 or 0 in rows:
            raise InputError(f"auto:fastest: accuracy_inputs must be non-empty arrays with the same number of rows,"
                             f" got shapes {[list(a.shape) for a in arrays]}")
        self.arrays, self.rows = arrays, rows.pop()
        self.labels = None if labels is None else np.asarray(labels).reshape(-1)
        if self.labels is not None and len(self.labels) != self.rows:
            raise InputError(f"auto:fastest: {len(self.labels)} accuracy_labels for {self.rows} accuracy_inputs rows")
        self.classifier = classifier
        digest = hashlib.sha256()
        for a in arrays + ([self.labels] if self.labels is not None else []):
            digest.update(f"{a.dtype.str}|{a.shape}|".encode())
            digest.update(np.ascontiguousarray(a).tobytes())
        self.sha256 = digest.hexdigest()
        self.reference: list[np.ndarray] = []
        self.reference_accuracy: float | None = None

    def same_rows_as(self, data: Mapping[str, np.ndarray]) -> bool:
        other = list(data.values())
        return len(other) == len(self.arrays) and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(self.arrays, other))

    def outputs(self, predictor: Predictor) -> list[np.ndarray]:
        chunks = [predictor.run(*[a[i:i + HELD_BACK_CHUNK] for a in self.arrays])
                  for i in range(0, self.rows, HELD_BACK_CHUNK)]
        return [np.concatenate([chunk[j] for chunk in chunks]) for j in range(len(chunks[0]))]

    def run_reference(self, reference: Predictor) -> None:
        self.reference = self.outputs(reference)
        if self.labels is not None:
            self.reference_accuracy = float((self.reference[0].argmax(-1) == self.labels).mean())

    def judge(self, record: dict[str, Any], predictor: Predictor, precision: str) -> bool:
        """Put the candidate's held-back figures in ``record``; False (with the reason) when it misses the budget."""
        try:
            outputs = self.outputs(predictor)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run the held-back rows is out
            record.update(parity=False, error=f"held-back run: {type(exc).__name__}: {exc}"[:500])
            return False
        err, why = parity(self.reference, outputs, record.get("rel_l2_budget"))
        facts: dict[str, Any] = {"rows": self.rows, "rel_l2": err if math.isfinite(err) else None}
        if self.classifier and math.isfinite(err):  # the figures are evidence even when the L2 bound failed
            agreement = float((outputs[0].argmax(-1) == self.reference[0].argmax(-1)).mean())
            facts["top1_agreement"] = agreement
            if not why and agreement < MIN_TOP1_AGREEMENT:
                why = f"top-1 agreement {agreement:.1%} < {MIN_TOP1_AGREEMENT:.0%}"
            if self.labels is not None:
                facts["accuracy"] = float((outputs[0].argmax(-1) == self.labels).mean())
                facts["reference_accuracy"] = self.reference_accuracy
                if not why and facts["accuracy"] < self.reference_accuracy - MAX_ACCURACY_DROP - 1e-12:
                    why = (f"accuracy {facts['accuracy']:.2%} < the fp32 reference's {self.reference_accuracy:.2%}"
                           f" - {MAX_ACCURACY_DROP:.0%}")
        record["held_back"] = facts
        if why:
            record.update(parity=False, error=f"accuracy budget ({precision}, {self.rows} held-back rows): {why}")
            return False
        return True

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "sha256": self.sha256, "labels": self.labels is not None,
                "classifier": self.classifier, "reference_accuracy": self.reference_accuracy}


# ------------------------------------------------------------------ inputs
def default_inputs(model: Model) -> list[np.ndarray] | None:
    """The zoo's sample batch for a zoo model, else random inputs from the PIR specs (None for legacy)."""
    zoo_name = model.metadata.get("zoo") if model.metadata else None
    if zoo_name:
        from hwdeploy import zoo

        return zoo.sample_inputs(zoo_name, batch=1, seed=0)
    specs = model_io(model)
    return random_inputs(specs[0]) if specs else None


def _arrays(inputs: Any) -> list[np.ndarray]:
    if isinstance(inputs, Mapping):
        return [np.asarray(inputs[k]) for k in sorted(inputs)]
    if isinstance(inputs, np.ndarray):
        return [inputs]
    return [np.asarray(a) for a in inputs]


def _call(predictor: Predictor, inputs: Any) -> list[np.ndarray]:
    if isinstance(inputs, Mapping):
        return predictor.run(dict(inputs))
    if isinstance(inputs, np.ndarray):
        return predictor.run(inputs)
    return predictor.run(*inputs)


# ------------------------------------------------------------------ measuring
def _create_reference(model: Model, device: Device, options: dict[str, Any],
                      records: list[dict[str, Any]]) -> tuple[Predictor, bool]:
    try:
        return create_on(model, device, SPEC, "error", options), True
    except OptionError as exc:  # options meant for another backend: the oracle runs with the portable ones
        records.append({"device": device.id, "backend": device.backend, "plugin": device.plugin, "parity": None,
                        "error": f"create: {exc}"})
        portable = {k: options[k] for k in _PORTABLE_OPTIONS if k in options}
        return create_on(model, device, SPEC, "error", portable), False


def _try(record: dict[str, Any], stage: str, action):
    """Run ``action``; on failure note why in ``record`` and return None (a broken candidate never stops the rest)."""
    try:
        return action()
    except InputError:
        raise  # the caller's sample inputs are wrong for the model: every candidate would fail
    except Exception as exc:  # noqa: BLE001 - plugins may raise anything; it disqualifies only them
        record["parity"] = False if stage != "create" else None
        record["error"] = f"{stage}: {type(exc).__name__}: {exc}"[:500]
        log.info("hwdeploy auto:fastest: %s (%s) skipped: %s", record["device"], record["backend"], record["error"])
        return None


def _parity_ok(record: dict[str, Any], ref_out: list[np.ndarray], outputs: Sequence[Any], when: str,
               tolerance: float | None = None, field: str = "rel_l2") -> bool:
    err, why = parity(ref_out, outputs, tolerance)
    record[field] = max(record.get(field) or 0.0, err) if math.isfinite(err) else None
    if why:
        record["parity"] = False
        record["error"] = f"parity ({when}): {why}"
        return False
    record["parity"] = True
    return True


def _time(live: list[tuple[Device, Predictor, dict[str, Any]]], inputs: Any,
          expected: Mapping[int, tuple[list[np.ndarray], float | None, str]], rounds: int, runs: int, warmup: int,
          settle: float) -> None:
    """Fill ``median_ms``/``min_ms`` of every live candidate; re-check its timed outputs against ``expected``."""
    samples: dict[int, list[float]] = {id(r): [] for _d, _p, r in live}
    last: dict[int, Any] = {}
    clock = time.perf_counter
    for round_index in range(rounds):
        # Rotate the order: whoever runs right after another runtime pays for its still-spinning threads.
        shift = round_index % max(len(live), 1)
        for _device, predictor, record in live[shift:] + live[:shift]:
            if record.get("parity") is not True:
                continue
            if settle and len(live) > 1:
                time.sleep(settle)
            try:
                for _ in range(warmup):
                    _call(predictor, inputs)
                for _ in range(runs):
                    start = clock()
                    out = _call(predictor, inputs)
                    samples[id(record)].append(clock() - start)
                last[id(record)] = out
            except Exception as exc:  # noqa: BLE001
                record["parity"] = False
                record["error"] = f"timed run: {type(exc).__name__}: {exc}"[:500]
    for _device, _predictor, record in live:
        times = samples[id(record)]
        if record.get("parity") is True and times:
            record["median_ms"] = round(float(np.median(times)) * 1e3, 4)
            record["min_ms"] = round(min(times) * 1e3, 4)
            record["samples"] = len(times)
            outputs, tolerance, field = expected[id(record)]
            _parity_ok(record, outputs, last[id(record)], "timed run", tolerance, field)


# ------------------------------------------------------------------ decision cache
def _decision_key(model: Model, inputs: Any, candidates: Sequence[Device], options: dict[str, Any],
                  judged_by: Any = None) -> str:
    manager = get_plugin_manager()
    backends = sorted((d.plugin, d.backend, d.id, sorted(d.versions.items()), manager.plugin_version(d.plugin))
                      for d in candidates)
    shapes = [(list(a.shape), str(a.dtype)) for a in _arrays(inputs)]
    return cache_key("auto:fastest", DECISION_VERSION, model.sha256, shapes, backends, options, judged_by,
                     hwdeploy_version(), machine_fingerprint())


def _decision_path(key: str):
    return cache_dir("fastest") / f"{key}.json"


def _save_decision(key: str, decision: dict[str, Any]) -> None:
    path = _decision_path(key)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(decision, indent=1, default=str))
    os.replace(tmp, path)


def load_decision(key: str) -> dict[str, Any] | None:
    """A cached decision by key, or None when absent or unreadable."""
    try:
        decision = json.loads(_decision_path(key).read_text())
    except (OSError, ValueError):
        return None
    return decision if isinstance(decision, dict) and decision.get("version") == DECISION_VERSION else None


def _use_cached(model: Model, key: str, candidates: Sequence[Device], options: dict[str, Any],
                fallback: str, calibration_data: tuple[dict, str] | None) -> Predictor | None:
    decision = load_decision(key)
    if decision is None:
        return None
    chosen = decision.get("chosen") or {}
    device = next((d for d in candidates if d.id == chosen.get("device") and d.backend == chosen.get("backend")
                   and d.plugin == chosen.get("plugin")), None)
    if device is None:
        return None
    try:
        wanted = _precision_options(options, chosen.get("precision", "fp32"), calibration_data)
        predictor = create_on(model, device, SPEC, "error", wanted)
    except HwdeployError as exc:  # it worked when measured; something changed: measure again
        log.info("hwdeploy auto:fastest: cached choice %s (%s) no longer loads (%s); measuring again",
                 device.id, device.backend, exc)
        return None
    return _finish(predictor, {**decision, "cached": True}, fallback)


def _finish(predictor: Predictor, decision: dict[str, Any], fallback: str) -> Predictor:
    rejected = [f"{r['device']} ({r['backend']} {r.get('precision', 'fp32')}): {r['error']}"
                for r in decision["candidates"] if r.get("error")]
    predictor.add_receipt_fields(selection=decision, auto_skipped=rejected, policy=fallback)
    summary = ", ".join(f"{r['backend']} {r.get('precision', 'fp32')} {r['median_ms']:.3f} ms"
                        for r in decision["candidates"] if r.get("median_ms") is not None)
    log.info("hwdeploy auto:fastest: chose %s (%s %s)%s; measured: %s%s", decision["chosen"]["device"],
             decision["chosen"]["backend"], decision["chosen"].get("precision", "fp32"), " [cached decision]" if decision.get("cached") else "", summary,
             f"; rejected: {rejected}" if rejected else "")
    return predictor
