"""Paddle Lite's x86 runtime (worker process, MobileConfig) vs Paddle Inference on the zoo models.

    pytest benchmarks/test_bench_lite.py --benchmark-group-by=param:name

One thread each, batch 1, the same inputs. Each group holds one model: ``paddle-lite`` (the
hwdeploy-arm plugin, x86 kernels, call through shared memory), ``paddle-inference`` (oneDNN, the
CPU reference default) and ``paddle-inference-native`` (oneDNN off). The Lite numbers include the
host <-> worker round trip, i.e. what an hwdeploy user pays.
"""

from __future__ import annotations

import os

import pytest

import hwdeploy
from hwdeploy.errors import BackendError

pytest.importorskip("hwdeploy_arm", reason="the hwdeploy-arm plugin is not installed")

ZOO = ["mlp", "mobilenet_v2", "resnet18", "transformer_encoder", "gru_text", "unet_small"]
ENGINES = {
    "paddle-lite": {"backend": "paddle-lite"},
    "paddle-inference": {"backend": "paddle-inference", "onednn": True},
    "paddle-inference-native": {"backend": "paddle-inference", "onednn": False},
}


@pytest.fixture(scope="module", autouse=True)
def lite_env():
    from hwdeploy.api import clear_discovery_cache

    from hwdeploy_arm import env

    if env.find_lite_python() is None:
        search = env.search_base_python()
        if search.chosen is None:
            (pytest.fail if os.environ.get("CI") else pytest.skip)(
                f"no CPython 3.10 for the Paddle Lite environment ({search.explain()})")
        env.setup_lite_env(search.chosen)
        clear_discovery_cache()


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("name", ZOO)
def test_bench_lite_vs_inference(benchmark, name, engine):
    from hwdeploy import zoo

    z = zoo.get(name)
    inputs = z.sample_inputs(batch=1, seed=0)
    try:
        predictor = hwdeploy.predictor(z.model, device="cpu", threads=1, **ENGINES[engine])
        predictor.run(*inputs)
    except BackendError as exc:
        pytest.skip(f"{engine} cannot run {name}: {exc}")
    benchmark.group = name
    benchmark.extra_info.update(engine=engine, model=name, batch=1, threads=1)
    try:
        outputs = benchmark.pedantic(predictor.run, args=inputs, rounds=15, iterations=1, warmup_rounds=3)
    finally:
        predictor.close()
    assert outputs and outputs[0].shape[0] == 1
