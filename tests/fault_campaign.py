"""The fault campaign (issue 12): generated hostile cases, each in its own child process.

    python tests/fault_campaign.py --cases 1200 --out fault-campaign.json      # the large campaign
    python tests/fault_campaign.py --quick --out quick.json                    # the slice the core suite runs

Cases: mutants of both model formats (:mod:`fault_mutants`: drop a var/op, an op input renamed to an undeclared
var, a mutated attribute, a dangling sub-block, fetch removed, random byte flips, truncation, damaged parameter
headers), bad inputs (Hypothesis-generated dtypes/shapes/values, token ids out of range, NaN, wrong counts),
bad options and device strings (Hypothesis text), hostile paths. This process imports hwdeploy and Paddle once;
every case runs in a ``fork()`` of it (a fresh address space: a crash kills the child, and is observed, not
suffered), bounded by a timeout. Outcomes: ``ok`` (ran; answer checked where a right answer is known), ``typed``
(a HwdeployError), ``untyped`` (any other exception), ``signal``, ``hang``, ``wrong`` (ran but silently wrong:
no outputs, other output count/shape than the model declares, or an answer that differs from the reference for
the same valid inputs). The summary JSON tallies them per class and lists every non-clean case.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

BAD = ("untyped", "signal", "hang", "wrong")
MODELS = ["mlp", "transformer_encoder", "gru_text"]


# ---------------------------------------------------------------- running one case in a fork


def run_forked(fn: Callable[[], dict], timeout: float) -> dict:
    """``fn()`` in a forked child; its dict back through a pipe, or what killed it."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        os.setpgid(0, 0)
        faulthandler.disable()  # pytest's dump of a crashing child would only fill the log
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - classified below
            from hwdeploy.errors import HwdeployError

            if isinstance(exc, HwdeployError):
                result = {"outcome": "typed", "error": type(exc).__name__, "message": str(exc)[:300]}
            else:
                result = {"outcome": "untyped", "error": type(exc).__name__, "message": str(exc)[:300],
                          "traceback": traceback.format_exc()[-1500:]}
        try:
            os.write(write_end, json.dumps(result, default=str).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.set_blocking(read_end, False)
    chunks, status = [], None
    while True:
        try:
            chunk = os.read(read_end, 1 << 16)
            if chunk:
                chunks.append(chunk)
        except BlockingIOError:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started > timeout:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            os.close(read_end)
            return {"outcome": "hang", "seconds": round(time.monotonic() - started, 2)}
        time.sleep(0.005)
    try:
        while chunk := os.read(read_end, 1 << 16):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    os.close(read_end)
    seconds = round(time.monotonic() - started, 3)
    if os.WIFSIGNALED(status):
        return {"outcome": "signal", "signal": signal.Signals(os.WTERMSIG(status)).name, "seconds": seconds}
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        return {"outcome": "untyped", "error": "NoResult", "message": f"child exited {os.WEXITSTATUS(status)}"
                " without a result", "seconds": seconds}
    result["seconds"] = seconds
    return result


# ---------------------------------------------------------------- what a child does


def _check_outputs(predictor, outputs, reference=None) -> dict:
    if not isinstance(outputs, list) or not outputs:
        return {"outcome": "wrong", "message": f"run() returned {outputs!r:.80} without an error"}
    if len(outputs) != len(predictor.outputs):
        return {"outcome": "wrong", "message": f"{len(outputs)} outputs, the predictor declares {len(predictor.outputs)}"}
    for spec, array in zip(predictor.outputs, outputs):
        if spec.shape and len(spec.shape) != array.ndim:
            return {"outcome": "wrong", "message": f"output {spec.name} has rank {array.ndim}, spec {spec.shape}"}
    if reference is not None:
        for got, want in zip(outputs, reference):
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=False):
                return {"outcome": "wrong", "message": "answer differs from the reference for the same inputs"}
    return {"outcome": "ok"}


def model_case(directory: str, inputs: list) -> Callable[[], dict]:
    def run() -> dict:
        import hwdeploy

        predictor = hwdeploy.predictor(directory, device="cpu", threads=1)
        return _check_outputs(predictor, predictor.run(*inputs))
    return run


def input_case(model_path: str, inputs: Any, reference: list | None, expect_typed: bool) -> Callable[[], dict]:
    def run() -> dict:
        import hwdeploy

        predictor = hwdeploy.predictor(model_path, device="cpu", threads=1)
        outputs = predictor.run(*inputs) if isinstance(inputs, list) else predictor.run(inputs)
        result = _check_outputs(predictor, outputs, reference)
        if result["outcome"] == "ok" and expect_typed:
            return {"outcome": "wrong", "message": "invalid inputs accepted without an error"}
        return result
    return run


def call_case(fn_source: str) -> Callable[[], dict]:
    def run() -> dict:
        import hwdeploy  # noqa: F401 - used by the source

        namespace: dict[str, Any] = {"hwdeploy": hwdeploy, "np": np}
        exec(fn_source, namespace)  # noqa: S102 - the campaign's own generated calls
        value = namespace.get("result")
        if value is not None and hasattr(value, "close"):
            value.close()
        return {"outcome": "ok"}
    return run


# ---------------------------------------------------------------- generating cases


def _zoo_models():
    from hwdeploy import zoo

    return {name: zoo.get(name) for name in MODELS}


def mutant_cases(zoo_models, workdir: Path, per_kind: int, rng: random.Random) -> list[dict]:
    import fault_mutants as fm

    cases = []
    for fmt, generators in (("legacy", fm.LEGACY), ("pir", fm.PIR)):
        for kind, generate in generators.items():
            for number in range(per_kind):
                name = MODELS[number % len(MODELS)]
                model = zoo_models[name].legacy if fmt == "legacy" else zoo_models[name].model
                program, params = model.program.read_bytes(), model.params.read_bytes()
                try:
                    new_program, new_params, description = generate(program, params, random.Random(rng.random()))
                except (ValueError, IndexError, KeyError):
                    continue  # nothing of that kind to mutate in this model
                directory = workdir / f"{fmt}-{kind}-{number}"
                directory.mkdir()
                suffix = ".pdmodel" if fmt == "legacy" else ".json"
                (directory / f"model{suffix}").write_bytes(new_program)
                (directory / "model.pdiparams").write_bytes(new_params)
                inputs = zoo_models[name].sample_inputs(batch=2)
                cases.append({"class": f"model/{fmt}/{kind}", "format": fmt, "model": name,
                              "description": description, "run": model_case(str(directory), inputs)})
    return cases


def input_cases(zoo_models, references, count: int, seed: int) -> list[dict]:
    """Hypothesis draws bad (and some good) inputs for the PIR and legacy exports of the zoo models."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from hwdeploy.zoo import VOCAB

    drawn: list[tuple] = []
    kinds = ["good", "dtype", "shape", "rank", "count", "nan", "empty", "ids_negative", "ids_vocab", "object",
             "huge_batch", "broadcast", "good_batch"]

    @settings(max_examples=count, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(MODELS), st.sampled_from(["pir", "legacy"]), st.sampled_from(kinds),
           st.integers(0, 2**31 - 1), st.sampled_from(["float64", "float16", "int32", "int64", "bool", "uint8",
                                                       "complex64", "float32"]))
    def collect(name, fmt, kind, number, dtype):
        drawn.append((name, fmt, kind, number, dtype))

    collect()
    cases = []
    for index, (name, fmt, kind, number, dtype) in enumerate(drawn[:count]):
        z = zoo_models[name]
        model = z.model if fmt == "pir" else z.legacy
        rng = np.random.default_rng(number)
        good = z.sample_inputs(batch=2, seed=1)
        reference = references.get((name, fmt))
        expect_typed, inputs, ref = True, list(good), None
        first = good[0]
        if kind == "good":
            expect_typed, ref = False, reference
        elif kind == "good_batch":
            inputs, expect_typed = z.sample_inputs(batch=int(rng.integers(1, 6)), seed=2), False
        elif kind == "dtype":
            if np.dtype(dtype) == first.dtype:
                dtype = "complex64"
            inputs[0] = first.astype(dtype)
            expect_typed = first.dtype.kind != np.dtype(dtype).kind and not (
                first.dtype.kind == "i" and np.dtype(dtype).kind in "ub")  # an int64 id as int32/uint8 is cast
            expect_typed = None if not expect_typed else True  # a same-kind cast may be accepted or refused
        elif kind == "shape":
            shape = list(first.shape)
            shape[-1] = shape[-1] + int(rng.integers(1, 9))
            inputs[0] = np.zeros(shape, first.dtype)
            expect_typed = None if name != "mlp" else True  # a longer sequence is a valid input for the text models
        elif kind == "rank":
            inputs[0] = first.reshape(-1) if rng.integers(2) else first[None]
        elif kind == "count":
            inputs = inputs + [first] if rng.integers(2) else []
        elif kind == "nan":
            if first.dtype.kind != "f":
                continue
            bad = first.copy()
            bad.flat[int(rng.integers(bad.size))] = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
            inputs[0] = bad
        elif kind == "empty":
            inputs[0] = np.zeros((0,) + first.shape[1:], first.dtype)
        elif kind == "ids_negative":
            if first.dtype.kind != "i":
                continue
            bad = first.copy()
            bad.flat[int(rng.integers(bad.size))] = -int(rng.integers(1, 2**31))
            inputs[0] = bad
        elif kind == "ids_vocab":
            if first.dtype.kind != "i":
                continue
            bad = first.copy()
            bad.flat[int(rng.integers(bad.size))] = VOCAB + int(rng.integers(0, 10**6))
            inputs[0] = bad
        elif kind == "object":
            inputs[0] = [None, "text", {"a": 1}, object(), [[1, "x"]]][int(rng.integers(5))]
        elif kind == "huge_batch":
            inputs[0] = np.broadcast_to(first[:1], (10**9,) + first.shape[1:])  # a view: ~0 bytes here
        elif kind == "broadcast":
            inputs[0] = np.broadcast_to(first[:1], (int(rng.integers(1, 64)),) + first.shape[1:])
            expect_typed = False
        cases.append({"class": f"input/{kind}", "format": fmt, "model": name,
                      "description": f"{name} {fmt}: {kind} ({dtype})",
                      "run": input_case(str(model.program), inputs, ref, bool(expect_typed)),
                      "lenient": expect_typed is None})
    return cases


def option_cases(zoo_models, count: int) -> list[dict]:
    """Device strings (Hypothesis text and known traps), option values of the wrong type or range, paths."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    model = str(zoo_models["mlp"].model.program)
    legacy = str(zoo_models["mlp"].legacy.program)
    devices: list[str] = []

    @settings(max_examples=max(count // 3, 1), database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.text(max_size=12), st.from_regex(r"\A(cpu|gpu|npu|mlu|xpu|auto)(:[-+0-9²٣x ]{0,4})?\Z")))
    def collect(device):
        devices.append(device)

    collect()
    traps = ["cpu:²", "gpu:x", "", "npu:-1", "cpu:0 ", "CPU", "cpu:99", "auto:fastest", "cpu:1e3", "\x00"]
    device_sources = [f"result = hwdeploy.predictor({model!r}, device={d!r}, threads=1)" for d in traps + devices]
    sources = []
    options = ["threads='x'", "threads=10**9", "threads=-1", "threads=0", "threads=1.5", "onednn='no'",
               "optim_cache='no'", "check_finite='no'", "spinning='no'", "precision='fp3'", "precision=None",
               "fallback='bogus'", "backend='nope'", "bogus_option=1", "threads=True", "memory_budget='x'"]
    for option in options:
        for path in (model, legacy):
            sources.append(f"result = hwdeploy.predictor({path!r}, device='cpu', {option})")
    paths = ["'x' * 5000", "'/'", "'/dev/null'", "'/proc/self/status'", "''", "'zoo:nonexistent'", "('a', 'b', 'c')",
             "42", "None", f"({model!r}, '/tmp')", f"({legacy!r}, '/')", "'/etc/passwd'"]
    option_sources, sources = sources, []
    path_sources = [f"result = hwdeploy.predictor({p}, device='cpu')" for p in paths]
    path_sources += [f"result = hwdeploy.load_model({p})" for p in paths]
    groups = [device_sources, option_sources, path_sources]
    while any(groups) and len(sources) < count:  # round robin: every group in every slice
        for group in groups:
            if group and len(sources) < count:
                sources.append(group.pop(0))
    cases = []
    for source in sources:
        cases.append({"class": "call/" + ("device" if "device=" in source and "device='cpu'" not in source
                                          else "option" if "predictor(" in source and "', device='cpu', " in source
                                          else "path"),
                      "format": "legacy" if legacy in source else "pir", "model": "mlp",
                      "description": source.replace(model, "<mlp.json>").replace(legacy, "<mlp.pdmodel>")[:200],
                      "run": call_case(source), "lenient": False, "ok_allowed": True})
    return cases


def references(zoo_models, timeout: float) -> dict:
    """Reference outputs per (model, format) for the campaign's good inputs, computed in a fork too."""
    def compute() -> dict:
        import hwdeploy

        out = {}
        for name, z in zoo_models.items():
            for fmt, model in (("pir", z.model), ("legacy", z.legacy)):
                predictor = hwdeploy.predictor(model, device="cpu", threads=1)
                out[f"{name}|{fmt}"] = [a.tolist() for a in predictor.run(*z.sample_inputs(batch=2, seed=1))]
                predictor.close()
        return {"outcome": "ok", "refs": out}

    result = run_forked(compute, timeout)
    assert result["outcome"] == "ok", result
    return {tuple(key.split("|")): [np.asarray(a, dtype=np.float32) for a in value]
            for key, value in result["refs"].items()}


# ---------------------------------------------------------------- the campaign


def campaign(total: int, seed: int = 0, timeout: float = 60.0, log=print) -> dict:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="hwdeploy-faults-"))
    zoo_models = _zoo_models()
    # Verdicts of the safety net go to a private cache: the campaign never condemns or blesses the user's models.
    os.environ["HWDEPLOY_CACHE_DIR"] = str(workdir / "cache")
    os.environ.setdefault("HWDEPLOY_SAFETY_NET_TIMEOUT", "30")
    from hwdeploy.sdk.paddle_inference import inference_module

    inference_module()  # imported once here; every fork shares it
    refs = references(zoo_models, timeout * 3)
    import fault_mutants as fm

    mutant_kinds = len(fm.LEGACY) + len(fm.PIR)
    per_kind = max(1, int(total * 0.5) // mutant_kinds)
    cases = mutant_cases(zoo_models, workdir, per_kind, rng)
    cases += input_cases(zoo_models, refs, max(1, int(total * 0.3)), seed)
    cases += option_cases(zoo_models, max(1, total - len(cases)))
    started = time.monotonic()
    tally: Counter = Counter()
    per_class: dict[str, Counter] = defaultdict(Counter)
    per_format: dict[str, Counter] = defaultdict(Counter)
    findings = []
    for number, case in enumerate(cases):
        result = run_forked(case["run"], timeout)
        outcome = result["outcome"]
        if outcome == "wrong" and case.get("lenient"):
            outcome = "ok"  # accepted an input the model may legitimately take (a longer sequence, a safe cast)
        tally[outcome] += 1
        per_class[case["class"]][outcome] += 1
        per_format[case["format"]][outcome] += 1
        if outcome in BAD:
            findings.append({"class": case["class"], "model": case["model"], "description": case["description"],
                             **{k: v for k, v in result.items() if k != "outcome"}, "outcome": outcome})
            log(f"[{number}] {outcome}: {case['description']} {result.get('error', '')} {result.get('message', '')}"
                f"{result.get('signal', '')}")
    seconds = time.monotonic() - started
    summary = {"workdir": str(workdir), "cases": len(cases), "seconds": round(seconds, 1), "seed": seed,
               "timeout_s": timeout,
               "outcomes": {k: tally.get(k, 0) for k in ("ok", "typed", *BAD)},
               "by_class": {k: dict(v) for k, v in sorted(per_class.items())},
               "by_format": {k: dict(v) for k, v in sorted(per_format.items())},
               "findings": findings}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1200)
    parser.add_argument("--quick", action="store_true", help="the core suite's slice (~150 cases)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    total = 150 if args.quick else args.cases
    summary = campaign(total, args.seed, args.timeout, log=lambda line: print(line, flush=True))
    shutil.rmtree(summary.pop("workdir"), ignore_errors=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("cases", "seconds", "outcomes")}), flush=True)
    return 0 if not any(summary["outcomes"][k] for k in BAD) else 1


if __name__ == "__main__":
    sys.exit(main())
