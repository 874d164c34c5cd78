"""Shared helpers for hwdeploy's benchmarks (pytest-benchmark).

    pytest benchmarks --benchmark-json=.benchmarks/latest.json
    python benchmarks/render.py                 # Markdown table for the README

Knobs (environment): ``HWDEPLOY_BENCH_MODELS`` (comma list, default: the
whole zoo), ``HWDEPLOY_BENCH_BATCHES`` (default ``1,8``),
``HWDEPLOY_BENCH_THREADS`` (math threads per predictor, default: the cores
this process may use), ``HWDEPLOY_BENCH_SECONDS`` (timed budget per
benchmark, default 0.4 s: the whole suite stays within a few minutes).

Every timed benchmark uses ``benchmark.pedantic`` with a round count derived
from that budget, so the run time does not depend on pytest-benchmark's
calibration. Ratios that matter (wrapper overhead, auto:fastest vs the best
single backend) are also measured *interleaved* in one loop and stored in
``extra_info``: on a shared machine, load drifts between two benchmarks that
run one after the other, but hits both sides of an interleaved pair alike.
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Callable

import numpy as np
import pytest

from hwdeploy.sdk.hostinfo import cpu_name, default_threads

os.environ.setdefault("GLOG_minloglevel", "2")


def _env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "").strip()
    return [v.strip() for v in value.split(",") if v.strip()] if value else default


ZOO_NAMES = ["mlp", "mobilenet_v2", "resnet18", "transformer_encoder", "gru_text", "unet_small"]
MODELS = _env_list("HWDEPLOY_BENCH_MODELS", ZOO_NAMES)
BATCHES = [int(b) for b in _env_list("HWDEPLOY_BENCH_BATCHES", ["1", "8"])]
THREADS = int(os.environ.get("HWDEPLOY_BENCH_THREADS", "0")) or default_threads()
SECONDS = float(os.environ.get("HWDEPLOY_BENCH_SECONDS", "0.4"))
BACKENDS = ["paddle-inference", "onnxruntime", "openvino"]
VERSIONED = ("hwdeploy", "paddlepaddle", "onnxruntime", "openvino", "paddle2onnx", "numpy", "pytest-benchmark")


def versions() -> dict[str, str]:
    out = {}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def pytest_configure(config):
    # pytest-benchmark writes --benchmark-json at the end and fails if its folder is missing.
    path = config.getoption("benchmark_json", default=None)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(str(path))), exist_ok=True)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["hwdeploy"] = {
        "cpu": cpu_name(), "cores": default_threads(), "threads_per_predictor": THREADS, "python": platform.python_version(),
        "versions": versions(), "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    info = output_json.setdefault("machine_info", {}).setdefault("hwdeploy", {})
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None


# ------------------------------------------------------------------ timing helpers
def rounds_for(fn: Callable[[], object], budget: float = SECONDS, lo: int = 5, hi: int = 300) -> int:
    """How many timed rounds of ``fn`` fit in ``budget`` seconds (between ``lo`` and ``hi``)."""
    start = time.perf_counter()
    fn()
    fn()
    each = max((time.perf_counter() - start) / 2, 1e-6)
    return int(min(hi, max(lo, budget / each)))


def timed(benchmark, fn: Callable[[], object], budget: float = SECONDS, warmup: int = 2):
    """``benchmark.pedantic`` over ``fn`` with a round count that fits ``budget``."""
    return benchmark.pedantic(fn, rounds=rounds_for(fn, budget), iterations=1, warmup_rounds=warmup)


def interleaved(fns: dict[str, Callable[[], object]], budget: float = 2 * SECONDS, block: int = 1,
                lo: int = 15, hi: int = 400, settle: float = 0.0) -> dict[str, dict[str, float]]:
    """Median/min seconds per call of each ``fn``, measured in alternating blocks of ``block`` calls.

    ``block=1`` alternates single calls (right for two wrappers of the same
    runtime); different runtimes need blocks with their first call discarded,
    because one runtime's spinning or pinned threads slow the next one's
    first call; ``settle`` seconds of idle time before each block let the
    previous runtime's spinning threads park (Intel OpenMP spins 200 ms).
    """
    for fn in fns.values():  # warm-up
        fn()
    start = time.perf_counter()
    for fn in fns.values():
        fn()
    per_cycle = max(time.perf_counter() - start, 1e-6) * (block + (block > 1)) + settle * len(fns)
    cycles = int(min(hi, max(lo, budget / per_cycle)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    clock = time.perf_counter
    order = list(fns.items())
    for cycle in range(cycles):
        shift = cycle % len(order)  # rotate: no runtime always follows the same one
        for name, fn in order[shift:] + order[:shift]:
            if settle:
                time.sleep(settle)
            if block > 1:
                fn()  # discarded: pays for the previous runtime's threads
            for _ in range(block):
                t0 = clock()
                fn()
                samples[name].append(clock() - t0)
    return {name: {"median_s": float(np.median(s)), "min_s": float(np.min(s)), "samples": len(s)}
            for name, s in samples.items()}


# ------------------------------------------------------------------ models and predictors
_zoo_cache: dict[str, object] = {}


def zoo_model(name: str):
    """``hwdeploy.zoo.get(name)``, once per session; skips the benchmark if the zoo cannot build it."""
    from hwdeploy import zoo
    from hwdeploy.errors import HwdeployError

    if name not in _zoo_cache:
        try:
            _zoo_cache[name] = zoo.get(name)
        except HwdeployError as exc:
            _zoo_cache[name] = exc
    value = _zoo_cache[name]
    if isinstance(value, Exception):
        pytest.skip(f"zoo model {name} unavailable: {value}")
    return value


_predictors: dict[tuple, object] = {}


def backend_predictor(name: str, backend: str):
    """A hwdeploy predictor of zoo model ``name`` on ``backend`` (cpu), cached per session; skips if impossible."""
    import hwdeploy
    from hwdeploy.errors import HwdeployError

    key = (name, backend)
    if key not in _predictors:
        model = zoo_model(name).model
        if not any(d.backend == backend and d.available for d in hwdeploy.devices()):
            _predictors[key] = f"backend {backend} is not available here"
        else:
            try:
                _predictors[key] = hwdeploy.predictor(model, "cpu", backend=backend, threads=THREADS)
            except HwdeployError as exc:
                _predictors[key] = f"{backend} cannot run {name}: {type(exc).__name__}: {exc}"
    value = _predictors[key]
    if isinstance(value, str):
        pytest.skip(value)
    return value


def raw_paddle_call(paddle_predictor, arrays):
    """What a user of bare ``paddle.inference`` writes per call, on the given Paddle predictor.

    The overhead benchmark runs it on the very predictor hwdeploy wraps: two Paddle
    predictors of one model in one process do not run equally fast (measured here with
    Paddle 3.3.1: the second one created ran transformer_encoder ~1.5x slower than the
    first), so comparing two instances would measure Paddle, not the wrapper.
    """
    inputs = [paddle_predictor.get_input_handle(n) for n in paddle_predictor.get_input_names()]
    outputs = [paddle_predictor.get_output_handle(n) for n in paddle_predictor.get_output_names()]

    def call():
        for handle, array in zip(inputs, arrays):
            handle.copy_from_cpu(array)
        paddle_predictor.run()
        return [handle.copy_to_cpu() for handle in outputs]

    return call
