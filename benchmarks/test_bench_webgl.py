"""Paddle.js on WebGL (headless Chromium) vs the CPU reference: first load and steady-state predict.

    pytest benchmarks/test_bench_webgl.py --benchmark-group-by=param:name

- ``convert``: PIR -> Paddle.js conversion (``refresh=True``: no cache).
- ``first_load``: predictor creation from a converted (cached) model -- browser
  start, page, weights, shader compilation -- plus the first predict, then close.
  The CPU reference's equivalent (config + first run) is timed beside it.
- ``steady``: one predict on a loaded predictor, webgl and cpu, batch 1; the
  webgl/cpu ratio is also measured interleaved (``extra_info["interleaved"]``).

On a machine without a GPU Chromium renders WebGL with SwiftShader (a CPU
rasterizer): the renderer is recorded in ``extra_info`` and those figures are
not GPU figures. Models: ``HWDEPLOY_BENCH_WEBGL_MODELS`` (default
``mlp,unet_small,mobilenet_v2``; ``resnet18`` takes ~20 s per image on SwiftShader).
"""

from __future__ import annotations

import os

import pytest

import hwdeploy
from conftest import THREADS, interleaved, rounds_for, zoo_model

pytest.importorskip("hwdeploy_webgl", reason="the hwdeploy-webgl plugin is not installed")

EXPRESSIBLE = ["mlp", "unet_small", "mobilenet_v2", "resnet18"]  # the zoo models Paddle.js can run
_env = os.environ.get("HWDEPLOY_BENCH_WEBGL_MODELS", "mlp,unet_small,mobilenet_v2")
MODELS = [m.strip() for m in _env.split(",") if m.strip() in EXPRESSIBLE]
WEBGL = {"allow_software_renderer": True, "timeout": 900}


@pytest.fixture(scope="module")
def webgl_device():
    device = [d for d in hwdeploy.devices() if d.kind == "webgl"]
    if not device or not device[0].available:
        pytest.skip(f"webgl unavailable: {device[0].reason if device else 'no webgl plugin'}")
    return device[0]


def _info(benchmark, device, name: str, engine: str, what: str) -> None:
    benchmark.group = f"webgl {what} {name}"
    benchmark.extra_info.update(kind=f"webgl-{what}", model=name, engine=engine, batch=1,
                                renderer=device.details.get("renderer"),
                                software_renderer=device.details.get("software_renderer"))


@pytest.mark.parametrize("name", MODELS)
def test_bench_webgl_convert(benchmark, webgl_device, name):
    model = zoo_model(name).model
    _info(benchmark, webgl_device, name, "converter", "convert")
    artifact = benchmark.pedantic(lambda: hwdeploy.convert(model, "webgl", refresh=True), rounds=3, iterations=1)
    benchmark.extra_info["size_bytes"] = artifact.metadata["size"]["total_bytes"]
    benchmark.extra_info["paddlejs_ops"] = artifact.metadata["op_count"]


@pytest.mark.parametrize("engine", ["webgl", "cpu"])
@pytest.mark.parametrize("name", MODELS)
def test_bench_webgl_first_load(benchmark, webgl_device, name, engine):
    z = zoo_model(name)
    inputs = z.sample_inputs(batch=1, seed=0)
    hwdeploy.convert(z.model, "webgl")  # conversion is cached: not part of the load
    options = WEBGL if engine == "webgl" else {"threads": THREADS}

    def load_and_first_run():
        with hwdeploy.predictor(z.model, device=engine, **options) as p:
            return p.run(*inputs)

    _info(benchmark, webgl_device, name, engine, "first_load")
    outputs = benchmark.pedantic(load_and_first_run, rounds=2 if name in ("mobilenet_v2", "resnet18") else 3,
                                 iterations=1)
    assert outputs[0].shape[0] == 1


@pytest.mark.parametrize("name", MODELS)
def test_bench_webgl_steady(benchmark, webgl_device, name):
    z = zoo_model(name)
    inputs = z.sample_inputs(batch=1, seed=0)
    webgl = hwdeploy.predictor(z.model, device="webgl", **WEBGL)
    cpu = hwdeploy.predictor(z.model, device="cpu", threads=THREADS)
    try:
        webgl.run(*inputs)
        _info(benchmark, webgl_device, name, "webgl", "steady")
        fn = lambda: webgl.run(*inputs)  # noqa: E731
        benchmark.pedantic(fn, rounds=rounds_for(fn, lo=3, hi=200), iterations=1, warmup_rounds=1)
        ratio = interleaved({"webgl": fn, "cpu": lambda: cpu.run(*inputs)}, lo=3, hi=50)
        ratio["webgl_over_cpu"] = ratio["webgl"]["median_s"] / ratio["cpu"]["median_s"]
        benchmark.extra_info["interleaved"] = ratio
    finally:
        webgl.close()
        cpu.close()
