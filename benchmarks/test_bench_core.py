"""Core costs: wrapper overhead vs raw paddle.inference, predictor creation cold/warm, start-up, throughput.

    pytest benchmarks/test_bench_core.py --benchmark-json=.benchmarks/core.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest

import hwdeploy
from conftest import (BACKENDS, BATCHES, MODELS, THREADS, backend_predictor, interleaved, raw_paddle_call, timed,
                      zoo_model)

@pytest.mark.parametrize("impl", ["paddle.inference", "hwdeploy"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", MODELS)
def test_overhead(benchmark, name, batch, impl):
    """Per-call latency of one Paddle Inference predictor, driven by hand and through hwdeploy's Predictor.run."""
    z = zoo_model(name)
    inputs = z.sample_inputs(batch, seed=0)
    wrapped = backend_predictor(name, "paddle-inference")
    raw_call = raw_paddle_call(wrapped._predictor, inputs)  # the same Paddle predictor, driven by hand

    def hw_call():
        return wrapped.run(*inputs)

    np.testing.assert_allclose(hw_call()[0], raw_call()[0], rtol=1e-6, atol=1e-6)  # same computation
    benchmark.group = f"overhead {name} b{batch}"
    benchmark.extra_info.update(kind="overhead", model=name, batch=batch, impl=impl, threads=THREADS)
    if impl == "hwdeploy":
        # Alternating single calls: both sides share Paddle's thread pool and see the same load.
        pair = interleaved({"raw": raw_call, "hwdeploy": hw_call})
        benchmark.extra_info.update(
            interleaved_raw_ms=pair["raw"]["median_s"] * 1e3,
            interleaved_hwdeploy_ms=pair["hwdeploy"]["median_s"] * 1e3,
            interleaved_ratio=pair["hwdeploy"]["median_s"] / pair["raw"]["median_s"],
            interleaved_min_ratio=pair["hwdeploy"]["min_s"] / pair["raw"]["min_s"],
            interleaved_overhead_us=(pair["hwdeploy"]["median_s"] - pair["raw"]["median_s"]) * 1e6,
            interleaved_samples=pair["raw"]["samples"])
        # The wrapper's only per-call work beyond the raw calls is input validation: time it where it runs,
        # right after a Paddle call (cold caches make it several times dearer than in a tight loop).
        checks = _validation_in_situ(wrapped, inputs, raw_call, pair["raw"]["samples"])
        benchmark.extra_info.update(validation_us=checks * 1e6,
                                    validation_ratio=1 + checks / pair["raw"]["median_s"])
        # The shared-predictor guard (a non-blocking lock around each run) against the same run without it.
        guard = interleaved({"unguarded": lambda: wrapped._run(wrapped.prepare_inputs(inputs, {})),
                             "guarded": hw_call})
        benchmark.extra_info.update(guard_ratio=guard["guarded"]["median_s"] / guard["unguarded"]["median_s"])
    timed(benchmark, hw_call if impl == "hwdeploy" else raw_call)


def _validation_in_situ(predictor, inputs, raw_call, samples: int) -> float:
    """Median seconds of ``predictor.prepare_inputs`` (what ``run`` adds to ``_run``), each after a raw call."""
    args, times, clock = tuple(inputs), [], time.perf_counter
    for _ in range(max(samples, 20)):
        raw_call()
        start = clock()
        predictor.prepare_inputs(args, {})
        times.append(clock() - start)
    return float(np.median(times))


CREATE_MODELS = [m for m in ("mobilenet_v2",) if m in MODELS]


@pytest.mark.parametrize("state", ["cold", "warm"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CREATE_MODELS)
def test_create(benchmark, name, backend, state):
    """hwdeploy.predictor() time. cold: empty hwdeploy cache (conversion, optimized-program and
    OpenVINO blob caches all empty); warm: the same call again with the caches filled."""
    model = zoo_model(name).model
    backend_predictor(name, backend)  # skips when the backend is absent; fills the warm cache
    original = os.environ.get("HWDEPLOY_CACHE_DIR")

    def create():
        scratch = tempfile.mkdtemp(prefix="hwdeploy-cold-") if state == "cold" else None
        if scratch:
            os.environ["HWDEPLOY_CACHE_DIR"] = scratch
        try:
            hwdeploy.predictor(model, "cpu", backend=backend, threads=THREADS).close()
        finally:
            if scratch:
                if original is None:
                    os.environ.pop("HWDEPLOY_CACHE_DIR", None)
                else:
                    os.environ["HWDEPLOY_CACHE_DIR"] = original

    benchmark.group = f"create {name}"
    benchmark.extra_info.update(kind="create", model=name, backend=backend, state=state)
    benchmark.pedantic(create, rounds=2 if state == "cold" else 3, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("mode", ["no cache", "optim cache dir", "saved optimized model"])
@pytest.mark.parametrize("name", CREATE_MODELS)
def test_create_paddle_optim_cache(benchmark, name, mode):
    """Does Paddle's optimized-model cache shorten a second predictor creation (PIR model, CPU, oneDNN)?

    "optim cache dir": ``set_optim_cache_dir`` alone, directory filled by a first creation;
    "saved optimized model": plus ``enable_save_optim_model(True)``. Both measured warm.
    """
    from hwdeploy.sdk import paddle_inference as pi

    model = zoo_model(name).model
    directory = tempfile.mkdtemp(prefix="hwdeploy-optim-")

    def config():
        c = pi.make_config(model, threads=THREADS, optim_cache=False)
        if mode != "no cache":
            c.set_optim_cache_dir(directory)
            if mode == "saved optimized model":
                c.enable_save_optim_model(True)
        return c

    pi.create_paddle_predictor(config())  # fills the cache directory, if Paddle writes anything
    benchmark.group = f"create {name} paddle optim cache"
    benchmark.extra_info.update(kind="optim-cache", model=name, mode=mode, cache_files=sorted(os.listdir(directory)))
    benchmark.pedantic(lambda: pi.create_paddle_predictor(config()), rounds=3, iterations=1, warmup_rounds=0)


STARTUP = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import hwdeploy
    t1 = time.perf_counter()
    found = hwdeploy.devices()
    t2 = time.perf_counter()
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"paddle", "onnxruntime", "openvino", "paddle2onnx"})
    print(json.dumps({"import_s": t1 - t0, "devices_s": t2 - t1, "devices": len(found), "heavy": heavy}))
""")


def test_startup(benchmark):
    """A fresh interpreter: ``import hwdeploy`` then ``hwdeploy.devices()`` (probe cache warm)."""
    reports = []

    def child():
        out = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        reports.append(json.loads(out.stdout.strip().splitlines()[-1]))

    child()  # fills the probe cache
    benchmark.group = "startup"
    benchmark.pedantic(child, rounds=5, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        kind="startup", import_ms=float(np.median([r["import_s"] for r in reports])) * 1e3,
        devices_ms=float(np.median([r["devices_s"] for r in reports])) * 1e3, devices=reports[-1]["devices"],
        heavy_modules=sorted({m for r in reports for m in r["heavy"]}))
    assert not benchmark.extra_info["heavy_modules"]


THROUGHPUT_MODEL = "mobilenet_v2"


@pytest.mark.parametrize("workers", sorted({1, THREADS}))
@pytest.mark.parametrize("backend", BACKENDS)
def test_throughput(benchmark, backend, workers):
    """``workers`` threads, each with its own clone (one math thread each), batch 1: inferences per second.

    Paddle Inference 3.3.1 holds the GIL in ``predictor.run()`` (measured: a Python thread barely
    advances during a run), so its clones cannot run in parallel from Python threads; ONNX Runtime
    and OpenVINO release it.
    """
    if THROUGHPUT_MODEL not in MODELS:
        pytest.skip(f"{THROUGHPUT_MODEL} not selected")
    z = zoo_model(THROUGHPUT_MODEL)
    base = backend_predictor(THROUGHPUT_MODEL, backend)
    # One math thread per clone. OpenVINO clones share one compiled model, whose thread budget is shared:
    # give it `workers` threads in `workers` streams (hint "throughput") for the same arrangement.
    options = {"threads": workers, "hint": "throughput"} if backend == "openvino" else {"threads": 1}
    single = hwdeploy.predictor(z.model, "cpu", backend=backend, **options)
    clones = [single] + [single.clone() for _ in range(workers - 1)]
    inputs = z.sample_inputs(1, seed=0)
    start = time.perf_counter()
    single.run(*inputs)
    single.run(*inputs)
    calls = max(5, int(0.3 / max((time.perf_counter() - start) / 2, 1e-4)))

    def burst():
        errors = []

        def work(p):
            try:
                for _ in range(calls):
                    p.run(*inputs)
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(p,)) for p in clones]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

    benchmark.group = f"throughput {THROUGHPUT_MODEL} b1"
    benchmark.pedantic(burst, rounds=3, iterations=1, warmup_rounds=1)
    per_s = workers * calls / benchmark.stats.stats.median
    benchmark.extra_info.update(kind="throughput", model=THROUGHPUT_MODEL, backend=backend, workers=workers,
                                calls_per_worker=calls, inferences_per_s=per_s)
    assert base is not None
    single.close()
