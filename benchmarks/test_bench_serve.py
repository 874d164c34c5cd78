"""Serving on Ray Serve: an in-process predictor vs one and two replicas, dynamic batching on and off.

tritonclient on the same machine at concurrency 1, 8 and 32; every point is bounded in time
(``HWDEPLOY_BENCH_SERVE_SECONDS``, default 2 s) and in count. Ray and Serve bind to 127.0.0.1 only. The figures
(requests/s, p50/p99) go to ``extra_info`` (``kind="serve"``); ``render.py`` turns them into the README's table
and the ratios issue 17 sets goals for (two replicas over one, batching on over off, the serving tax).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: keep the node on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
httpclient = pytest.importorskip("tritonclient.http")

import hwdeploy  # noqa: E402
from hwdeploy.serve import build_app  # noqa: E402

SECONDS = float(os.environ.get("HWDEPLOY_BENCH_SERVE_SECONDS", "2"))
CONCURRENCY = (1, 8, 32)
MODELS = {"transformer_encoder": ("tokens", "INT64", lambda: np.random.default_rng(0).integers(0, 1000, (1, 32))),
          "mobilenet_v2": ("x", "FP32", lambda: np.random.default_rng(0).standard_normal((1, 3, 224, 224))
                           .astype("float32"))}
SETUPS = {"1 replica, batching off": (1, 1, True), "1 replica, batching off, no request logs": (1, 1, False),
          "1 replica, batching 32/10ms": (1, 32, True), "2 replicas, batching off": (2, 1, True),
          "2 replicas, batching 32/10ms": (2, 32, True)}


def _summary(times: list[float], wall: float) -> dict[str, float]:
    ms = np.asarray(times) * 1e3
    return {"requests_per_s": len(times) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": len(times)}


@pytest.fixture(scope="module")
def server():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    try:
        yield f"127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def infer_input(model: str):
    """The model's batch-1 input as a tritonclient request tensor."""
    name, datatype, make = MODELS[model]
    x = make()
    request = httpclient.InferInput(name, list(x.shape), datatype)
    request.set_data_from_numpy(x)
    return request


def load(url: str, model: str, concurrency: int) -> dict[str, float]:
    """``concurrency`` threads, each with its own client (a tritonclient HTTP client is not shared across threads)."""
    barrier, end = threading.Barrier(concurrency + 1), [float("inf")]

    def worker() -> list[float]:
        out = []
        request = infer_input(model)
        with httpclient.InferenceServerClient(url, network_timeout=120) as client:
            client.infer(model, [request])  # connection and replica warm
            barrier.wait(timeout=120)
            while time.perf_counter() < end[0] and len(out) < 5000:
                started = time.perf_counter()
                client.infer(model, [request])
                out.append(time.perf_counter() - started)
        return out

    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        barrier.wait(timeout=120)
        start = time.perf_counter()
        end[0] = start + SECONDS
        times = [t for f in futures for t in f.result(timeout=SECONDS + 300)]
        wall = time.perf_counter() - start
    return _summary(times, wall)


@pytest.mark.parametrize("model", list(MODELS))
def test_in_process_predictor(benchmark, model):
    predictor = hwdeploy.predictor(f"zoo:{model}", device="cpu", threads=1)
    x = MODELS[model][2]()
    predictor.run(x)
    times, end = [], time.perf_counter() + SECONDS
    while time.perf_counter() < end and len(times) < 2000:
        started = time.perf_counter()
        predictor.run(x)
        times.append(time.perf_counter() - started)
    benchmark.group = f"serve {model}"
    benchmark.extra_info.update(kind="serve", model=model, setup="in-process predictor",
                                points={"1": _summary(times, sum(times))})
    benchmark.pedantic(predictor.run, args=(x,), rounds=20, iterations=1)


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("model", list(MODELS))
def test_ray_serve(benchmark, server, model, setup):
    replicas, batch, request_logs = SETUPS[setup]
    serve.run(build_app(f"zoo:{model}", "cpu", name=model, options={"threads": 1}, replicas=replicas,
                        max_batch_size=batch, batch_wait_ms=10, request_logs=request_logs),
              name="bench", route_prefix="/")
    try:
        points = {str(c): load(server, model, c) for c in CONCURRENCY}
        with httpclient.InferenceServerClient(server, network_timeout=120) as client:
            request = infer_input(model)
            benchmark.group = f"serve {model}"
            benchmark.extra_info.update(kind="serve", model=model, setup=setup, points=points)
            benchmark.pedantic(client.infer, args=(model, [request]), rounds=20, iterations=1, warmup_rounds=2)
    finally:
        serve.delete("bench")
