"""The fault campaign (issue 12): generated hostile cases, each in its own child process.

    python tests/fault_campaign.py --cases 1200 --out fault-campaign.json      # the large campaign
    python tests/fault_campaign.py --quick --out quick.json                    # the slice the core suite runs

Cases: mutants of both model formats (:mod:`fault_mutants`: drop a var/op, an op input renamed to an undeclared
var, a mutated attribute, a dangling sub-block, fetch removed, random byte flips, truncation, damaged parameter
headers), bad inputs (Hypothesis-generated dtypes/shapes/values, token ids out of range, NaN, wrong counts),
bad options and device strings (Hypothesis text), hostile paths, damaged caches (zoo builds, conversions,
safety-net verdicts, probe results: flipped, truncated, emptied, deleted, manifests lost or garbled), one
predictor shared by 8 threads (and one clone each), hostile command lines. This process imports hwdeploy and Paddle once;
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


# ---------------------------------------------------------------- cache damage, shared predictors, the CLI

CACHE_TARGETS = ("zoo", "onnx", "verdict", "probe")
DAMAGES = ("flip", "truncate", "empty", "delete", "delete-manifest", "garble-manifest", "dir-for-file")


def _cache_files(root: Path, target: str) -> list[Path]:
    """The files of one cache entry of the template, by target."""
    pattern = {"zoo": "zoo/*/mlp/**/*", "onnx": "convert/onnx/**/*", "verdict": "safety-net/*.json",
               "probe": "probes/*.json"}[target]
    return sorted(p for p in root.glob(pattern) if p.is_file())


def cache_targets() -> tuple[str, ...]:
    """The caches this environment has: the ONNX conversion needs paddle2onnx (``hwdeploy[onnx]``)."""
    from hwdeploy.sdk.onnx_export import converter_missing

    return tuple(t for t in CACHE_TARGETS if t != "onnx" or not converter_missing("to ONNX"))


def build_cache_template(root: Path, timeout: float, targets: tuple[str, ...]) -> dict:
    """A warm cache (the mlp's zoo entry, its ONNX export, a safety-net verdict, a probe result), built in a fork
    so that this process keeps its own state; returns the right answers the damaged copies must still give."""
    def build() -> dict:
        os.environ["HWDEPLOY_CACHE_DIR"] = str(root)
        import hwdeploy
        from hwdeploy import zoo
        from hwdeploy.sdk import cache, safety_net
        from hwdeploy.sdk.isolation import run_probe

        zoo._loaded.clear()
        z = zoo.get("mlp")
        onnx = hwdeploy.convert(z.model, "onnx") if "onnx" in targets else None
        safety_net._verdicts.clear()
        safety_net.check(z.legacy)
        probe = run_probe("platform:python_version", cache_ttl=3600)
        refs = {}
        for fmt, model in (("pir", z.model), ("legacy", z.legacy)):
            predictor = hwdeploy.predictor(model, device="cpu", threads=1)
            refs[fmt] = [a.tolist() for a in predictor.run(*z.sample_inputs(batch=2, seed=1))]
            predictor.close()
        return {"outcome": "ok", "onnx_sha256": onnx and cache.file_sha256(onnx.path()), "probe": probe.value,
                "refs": refs}

    result = run_forked(build, timeout)
    assert result["outcome"] == "ok", result
    assert all(_cache_files(root, target) for target in targets), "the cache template lacks an entry"
    return result


def _damage(path: Path, damage: str, rng: random.Random) -> str:
    entry = path.parent
    if damage == "flip" and path.stat().st_size:
        data = bytearray(path.read_bytes())
        offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return f"bit flipped at {offset} of {path.name}"
    if damage == "truncate":
        size = path.stat().st_size
        keep = rng.randrange(max(size, 1))
        with open(path, "r+b") as fh:
            fh.truncate(keep)
        return f"{path.name} truncated to {keep} of {size} bytes"
    if damage == "empty":
        path.write_bytes(b"")
        return f"{path.name} emptied"
    if damage == "delete":
        path.unlink()
        return f"{path.name} deleted"
    if damage == "dir-for-file":
        path.unlink()
        path.mkdir()
        return f"{path.name} replaced by a directory"
    manifests = sorted(entry.glob("*manifest*")) or sorted(entry.parent.glob("*manifest*"))
    if not manifests:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(64)))
        return f"{path.name} replaced by 64 random bytes (no manifest here)"
    if damage == "delete-manifest":
        manifests[0].unlink()
        return f"{manifests[0].name} of {entry.name} deleted"
    manifests[0].write_bytes(b"{" * rng.randrange(1, 5000))
    return f"{manifests[0].name} of {entry.name} garbled"


def cache_case(template: Path, target: str, damage: str, seed: int, answers: dict, workdir: Path) -> Callable[[], dict]:
    def run() -> dict:
        from hwdeploy.errors import HwdeployError

        try:
            return heal()
        except HwdeployError as exc:  # a damaged entry must be rebuilt, never become an error
            return {"outcome": "wrong", "message": f"{type(exc).__name__} instead of a rebuilt entry: {exc}"[:300]}

    def heal() -> dict:
        case_root = workdir / f"cache-{target}-{damage}-{seed}"
        shutil.copytree(template, case_root, symlinks=True)
        os.environ["HWDEPLOY_CACHE_DIR"] = str(case_root)
        import hwdeploy
        from hwdeploy import zoo
        from hwdeploy.sdk import cache, isolation, safety_net

        # A new process's view of the disk: nothing verified, loaded or remembered yet.
        for memo in (cache._verified, zoo._loaded, safety_net._verdicts, isolation._memory_cache):
            memo.clear()
        rng = random.Random(seed)
        files = _cache_files(case_root, target)
        victim = files[rng.randrange(len(files))]
        what = _damage(victim, damage, rng)
        if target == "probe":
            probe = isolation.run_probe("platform:python_version", cache_ttl=3600)
            if not probe.ok or probe.value != answers["probe"]:
                return {"outcome": "wrong", "message": f"{what}: the probe returned {probe.value!r} ({probe.error})"}
            return {"outcome": "ok", "message": what}
        z = zoo.get("mlp")
        if target == "onnx":
            artifact = hwdeploy.convert(z.model, "onnx")
            if cache.file_sha256(artifact.path()) != answers["onnx_sha256"]:
                return {"outcome": "wrong", "message": f"{what}: convert() served a different model.onnx"
                                                       f" (cached={artifact.cached})"}
            return {"outcome": "ok", "message": what}
        for fmt, model in (("pir", z.model), ("legacy", z.legacy)):
            predictor = hwdeploy.predictor(model, device="cpu", threads=1)
            reference = [np.asarray(a, dtype=np.float32) for a in answers["refs"][fmt]]
            result = _check_outputs(predictor, predictor.run(*z.sample_inputs(batch=2, seed=1)), reference)
            predictor.close()
            if result["outcome"] != "ok":
                return {**result, "message": f"{what}: {fmt}: {result['message']}"}
        return {"outcome": "ok", "message": what}
    return run


def cache_cases(workdir: Path, count: int, seed: int, timeout: float) -> list[dict]:
    """Every cache (zoo builds, conversions, safety-net verdicts, probe results) damaged every way, in copies of
    one warm template cache: each must be rebuilt or re-verified and give the right answer, or a typed error."""
    template, targets = workdir / "cache-template", cache_targets()
    answers = build_cache_template(template, timeout * 3, targets)
    combos = [(t, d) for d in DAMAGES for t in targets]  # every target within the first few cases
    cases = []
    for number in range(count):
        target, damage = combos[number % len(combos)]
        cases.append({"class": f"cache/{target}", "format": "pir" if target != "verdict" else "legacy",
                      "model": "mlp", "description": f"{target} cache: {damage} (seed {seed + number})",
                      "run": cache_case(template, target, damage, seed + number, answers, workdir),
                      "lenient": False})
    return cases


def shared_case(model_path: str, inputs_by_thread: list, clones: bool, threads: int = 8,
                runs: int = 25) -> Callable[[], dict]:
    """One predictor shared by ``threads`` threads (or one clone each): every call returns its own thread's
    answer (bit-identical to a single-threaded run) or raises ConcurrentUseError; never another thread's."""
    def run() -> dict:
        import threading

        import hwdeploy
        from hwdeploy.errors import ConcurrentUseError

        predictor = hwdeploy.predictor(model_path, device="cpu", threads=1)
        expected = [predictor.run(*inputs) for inputs in inputs_by_thread]  # single-threaded answers
        workers = [predictor.clone() for _ in range(threads)] if clones else [predictor] * threads
        wrong, refused, answered, failures = [], 0, 0, []
        lock, start = threading.Lock(), threading.Barrier(threads)

        def work(number: int) -> None:
            nonlocal refused, answered
            start.wait()
            for _ in range(runs):
                try:
                    got = workers[number].run(*inputs_by_thread[number])
                except ConcurrentUseError:
                    with lock:
                        refused += 1
                    continue
                except Exception as exc:  # noqa: BLE001 - reported as the case's outcome
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                same = len(got) == len(expected[number]) and all(
                    np.array_equal(g, w) for g, w in zip(got, expected[number]))
                with lock:
                    answered += 1
                    if not same:
                        wrong.append(number)

        pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=120)
        if any(thread.is_alive() for thread in pool):
            return {"outcome": "hang", "message": "a thread did not finish in 120 s"}
        if failures:
            return {"outcome": "untyped", "error": "ThreadFailure", "message": failures[0]}
        if wrong:
            return {"outcome": "wrong", "message": f"{len(wrong)} calls returned another answer than their own"}
        if clones and refused:
            return {"outcome": "wrong", "message": f"{refused} calls on a thread's own clone were refused"}
        return {"outcome": "ok", "message": f"{answered} answers right, {refused} concurrent calls refused"}
    return run


def shared_cases(zoo_models, count: int, seed: int) -> list[dict]:
    cases = []
    for number in range(count):
        clones, fmt = bool(number % 2), ("pir", "legacy")[(number // 2) % 2]  # both kinds in any slice
        name = MODELS[(number // 4) % len(MODELS)]
        z = zoo_models[name]
        model = z.model if fmt == "pir" else z.legacy
        inputs = [z.sample_inputs(batch=1 + (thread % 3), seed=seed + number * 8 + thread) for thread in range(8)]
        cases.append({"class": f"shared/{'clones' if clones else 'one-predictor'}", "format": fmt, "model": name,
                      "description": f"{name} {fmt}: 8 threads x 25 runs on "
                                     f"{'one clone each' if clones else 'one shared predictor'}",
                      "run": shared_case(str(model.program), inputs, clones), "lenient": False})
    return cases


def cli_case(argv: list[str], workdir: Path) -> Callable[[], dict]:
    """``hwdeploy <argv>`` in-process (stdout/stderr at the file-descriptor level to files): a documented exit
    code, no traceback, pure JSON on stdout under ``--json``; a crash or an exception escaping ``main`` is caught
    by the fork like any other case."""
    def run() -> dict:
        out_path, err_path = workdir / f"cli-{os.getpid()}.out", workdir / f"cli-{os.getpid()}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
            from hwdeploy import cli

            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
                code = exc.code if isinstance(exc.code, int) else 2
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        if code not in (0, 1, 2):
            return {"outcome": "wrong", "message": f"undocumented exit code {code}: {stderr[-300:]}"}
        if "Traceback (most recent call last)" in stderr + stdout:
            return {"outcome": "untyped", "error": "Traceback", "message": (stderr + stdout)[-600:]}
        if code == 1 and "error:" not in stderr and "error" not in stdout:
            return {"outcome": "wrong", "message": f"exit 1 without an error line: {stderr[-300:]}"}
        if "--json" in argv and code == 0:
            try:
                json.loads(stdout)
            except ValueError:
                return {"outcome": "wrong", "message": f"--json stdout is not JSON: {stdout[:200]!r}"}
        return {"outcome": "ok" if code == 0 else "typed", "message": f"exit {code}"}
    return run


def cli_cases(zoo_models, workdir: Path, count: int) -> list[dict]:
    """Hostile command lines: unwritable and special output paths, special and bad input files, bad options and
    device strings, unknown models and targets, plus Hypothesis-drawn argument lists."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    fifo = workdir / "input.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    text_file, npy_object = workdir / "notes.txt", workdir / "objects.npy"
    text_file.write_text("not an array\n")
    np.save(npy_object, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    wrong_dtype, good = workdir / "int.npy", workdir / "good.npy"
    np.save(wrong_dtype, np.zeros((1, 64), np.int64))
    np.save(good, zoo_models["mlp"].sample_inputs(batch=1)[0])
    a_file = workdir / "a-file"
    a_file.write_text("x")
    run = ["run", "zoo:mlp", "--device", "cpu", "--repeat", "1"]
    fixed = [
        run + ["--receipt", "/nonexistent/dir/r.json"], run + ["--receipt", "/proc/r.json"],
        run + ["--receipt", str(fifo)], run + ["--output", str(fifo)], run + ["--output", "/dev/null"],
        run + ["--output", str(workdir)], run + ["--output", "/proc/self/status"], run + ["--json"],
        run + ["--json", "--receipt", str(workdir / "r.json"), "--output", str(workdir / "o.npz")],
        run + ["--input", str(fifo)], run + ["--input", "/dev/zero"], run + ["--input", str(workdir / "none.npy")],
        run + ["--input", str(text_file)], run + ["--input", str(npy_object)], run + ["--input", str(wrong_dtype)],
        run + ["--input", str(good), "--input", str(good)], run + ["--input", str(good), "--json"],
        run + ["--option", "threads=x"], run + ["--option", "novalue"], run + ["--option", "onednn=no"],
        run + ["--option", "threads=1000000000"], run + ["--batch", "0"], run + ["--batch", "1000000000"],
        run + ["--repeat", "-1"], run + ["--seed", "-5"],
        ["run", "zoo:mlp", "--device", "gpu:7"], ["run", "zoo:mlp", "--device", "cpu:²"],
        ["run", "zoo:mlp", "--device", ""], ["run", "zoo:nonexistent"], ["run", "/etc/passwd"], ["run", ""],
        ["run", "x" * 5000], ["convert", "zoo:mlp", "--target", "nope"], ["convert", "zoo:mlp"],
        ["convert", "zoo:mlp", "--target", "onnx", "--out", "/proc/forbidden"],
        ["convert", "zoo:mlp", "--target", "onnx", "--option", "opset=99"],
        ["convert", "zoo:mlp", "--target", "onnx", "--out", str(a_file)], ["convert", "--list", "--json"],
        ["zoo", "export", "mlp", "/proc/x"], ["zoo", "export", "nonexistent", str(workdir / "z")],
        ["zoo", "export", "mlp", str(a_file)], ["zoo", "list", "--json"], ["options", "nonexistent"],
        ["options", "--json"], ["devices", "--json"], ["plugins", "--json"], ["run", "--help"], ["bogus"], [],
    ]
    vocabulary = ["run", "convert", "zoo", "options", "devices", "--device", "cpu", "gpu", "auto:fastest", "--json",
                  "--batch", "-3", "0", "7", "--input", str(fifo), str(text_file), "--output", "/", "--receipt",
                  "--option", "threads=0", "precision=int4", "--target", "onnx", "zoo:mlp", "zoo:gru_text", "--out",
                  "--format", "legacy", "export", "list", "--repeat", "--fallback", "warn", "bogus", "\x00", ""]
    drawn: list[list[str]] = []

    @settings(max_examples=max(count - len(fixed), 1), database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(vocabulary), min_size=1, max_size=7))
    def collect(argv):
        drawn.append(argv)

    collect()
    for argv in drawn:  # a bare `run` runs the whole zoo: minutes, not a hostile case
        if argv[0] == "run" and not any(token.startswith("zoo:") for token in argv):
            argv.insert(1, "zoo:mlp")
    argvs = (fixed + drawn)[:count]
    return [{"class": "cli", "format": "pir", "model": "mlp", "description": "hwdeploy " + " ".join(argv)[:180],
             "run": cli_case(argv, workdir), "lenient": False} for argv in argvs]


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
    from hwdeploy.sdk.cache import cache_dir

    user_zoo = cache_dir("zoo")
    os.environ["HWDEPLOY_CACHE_DIR"] = str(workdir / "cache")
    (workdir / "cache").mkdir()
    (workdir / "cache" / "zoo").symlink_to(user_zoo)  # the zoo models built once, shared read-only
    os.environ.setdefault("HWDEPLOY_SAFETY_NET_TIMEOUT", "30")
    from hwdeploy.sdk.paddle_inference import inference_module

    inference_module()  # imported once here; every fork shares it
    refs = references(zoo_models, timeout * 3)
    import fault_mutants as fm

    mutant_kinds = len(fm.LEGACY) + len(fm.PIR)
    per_kind = max(1, int(total * 0.5) // mutant_kinds)
    cases = mutant_cases(zoo_models, workdir, per_kind, rng)
    cases += input_cases(zoo_models, refs, max(1, int(total * 0.25)), seed)
    cases += cache_cases(workdir, max(len(CACHE_TARGETS), int(total * 0.05)), seed, timeout)
    cases += shared_cases(zoo_models, max(2 * len(MODELS), int(total * 0.025)), seed)
    cases += cli_cases(zoo_models, workdir, max(10, int(total * 0.06)))
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
