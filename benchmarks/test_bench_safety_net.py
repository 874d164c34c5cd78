"""What the legacy-program safety net (sdk/safety_net, issue 12) adds to loading a model.

    pytest benchmarks/test_bench_safety_net.py --benchmark-json=.benchmarks/safety_net.json

- ``first``: the verdict is unknown (no file, no memory): a child process loads and runs the model once.
- ``warm-disk``: a later process: the verdict is one hash-checked file.
- ``warm-memory``: the same process again: a dict look-up.
- ``create``: a whole ``hwdeploy.predictor`` for the legacy export, net on (warm verdict) vs net off,
  interleaved in one loop (``extra_info["net_on_over_off"]``): warm loads must not get slower.
"""

from __future__ import annotations

import statistics
import time

import pytest

import hwdeploy
from hwdeploy.sdk import safety_net

MODELS = ["mlp", "mobilenet_v2"]


def _legacy(name):
    from hwdeploy import zoo

    return zoo.get(name).legacy


def _forget(model, memory_only: bool = False) -> None:
    safety_net._verdicts.pop((model.sha256, True, True), None)
    if not memory_only:
        safety_net.verdict_path(safety_net.verdict_key(model, True, True)).unlink(missing_ok=True)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("state", ["first", "warm-disk", "warm-memory"])
def test_safety_net_check(benchmark, name, state):
    model = _legacy(name)
    model.sha256  # hashed once per Model by the config's cache key anyway
    benchmark.group = f"safety net {name}"
    benchmark.extra_info.update(kind="safety-net", model=name, state=state)
    safety_net.check(model)  # a verdict exists for the warm states
    if state == "first":
        benchmark.pedantic(safety_net.check, args=(model,), setup=lambda: _forget(model), rounds=3, iterations=1)
    elif state == "warm-disk":
        benchmark.pedantic(safety_net.check, args=(model,), setup=lambda: _forget(model, memory_only=True),
                           rounds=200, iterations=1)
    else:
        benchmark.pedantic(safety_net.check, args=(model,), rounds=2000, iterations=1)
    assert safety_net.check(model)["ok"]


@pytest.mark.parametrize("name", MODELS)
def test_create_with_and_without_the_net(benchmark, name, monkeypatch):
    model = _legacy(name)
    safety_net.check(model)

    def create(on: bool) -> float:
        monkeypatch.setenv("HWDEPLOY_SAFETY_NET", "1" if on else "0")
        _forget(model, memory_only=True)  # a new process's view: the verdict comes from disk
        started = time.perf_counter()
        hwdeploy.predictor(hwdeploy.load_model(model.program), device="cpu", threads=1).close()
        return time.perf_counter() - started

    on, off = [], []
    for _ in range(6):  # interleaved: machine load hits both sides alike
        off.append(create(False))
        on.append(create(True))
    ratio = statistics.median(on) / statistics.median(off)
    benchmark.group = f"safety net {name}"
    benchmark.extra_info.update(kind="safety-net-create", model=name, on_s=statistics.median(on),
                                off_s=statistics.median(off), net_on_over_off=ratio)
    monkeypatch.setenv("HWDEPLOY_SAFETY_NET", "1")
    # The ratio is a figure for the README, not a pass/fail: on a shared machine a timing bound is noise.
    benchmark.pedantic(create, args=(True,), rounds=3, iterations=1)
