"""Serving figures for the README (not a test): ``python tests_serve/measure.py`` in the serve tox env's Python.

In-process predictor vs Ray Serve (1 and 2 replicas, batching on and off), tritonclient on the same
machine at concurrency 1, 8 and 32, each point time-bounded. Prints a Markdown table.
"""

import os
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from ray import serve  # noqa: E402

import hwdeploy  # noqa: E402
from hwdeploy.serve import build_app  # noqa: E402

SECONDS = float(os.environ.get("MEASURE_SECONDS", "4"))
MODELS = {"transformer_encoder": ("tokens", "INT64", lambda b: np.random.default_rng(0).integers(0, 1000, (b, 32))),
          "mobilenet_v2": ("x", "FP32", lambda b: np.random.default_rng(0).standard_normal((b, 3, 224, 224))
                           .astype("float32"))}


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def inprocess(model):
    p = hwdeploy.predictor(f"zoo:{model}", device="cpu", threads=1)
    x = MODELS[model][2](1)
    p.run(x)
    times, end = [], time.perf_counter() + SECONDS
    while time.perf_counter() < end and len(times) < 2000:
        t = time.perf_counter()
        p.run(x)
        times.append(time.perf_counter() - t)
    return len(times) / sum(times), percentile(times, 50), percentile(times, 99)


def load(url, model, concurrency):
    """``concurrency`` threads, each with its own client (tritonclient's HTTP client is not shared across threads)."""
    name, datatype, make = MODELS[model]
    x = make(1)

    def worker(end):
        out = []
        with httpclient.InferenceServerClient(url, network_timeout=120) as client:
            inp = httpclient.InferInput(name, list(x.shape), datatype)
            inp.set_data_from_numpy(x)
            client.infer(model, [inp])
            barrier.wait()
            while time.perf_counter() < end[0] and len(out) < 5000:
                t = time.perf_counter()
                client.infer(model, [inp])
                out.append(time.perf_counter() - t)
        return out

    barrier = threading.Barrier(concurrency + 1)
    end = [float("inf")]
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(worker, end) for _ in range(concurrency)]
        barrier.wait()
        start = time.perf_counter()
        end[0] = start + SECONDS
        times = [t for f in futures for t in f.result()]
        wall = time.perf_counter() - start
    return len(times) / wall, percentile(times, 50), percentile(times, 99)


def main():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    url = f"127.0.0.1:{port}"
    rows = []
    for model in sys.argv[1:] or list(MODELS):
        qps, p50, p99 = inprocess(model)
        rows.append((model, "in-process predictor", 1, qps, p50, p99))
        for replicas, batch in [(1, 1), (1, 32), (2, 1), (2, 32)]:
            app = build_app(f"zoo:{model}", "cpu", name=model, options={"threads": 1}, replicas=replicas,
                            max_batch_size=batch, batch_wait_ms=10)
            serve.run(app, name="m", route_prefix="/")
            for c in (1, 8, 32):
                qps, p50, p99 = load(url, model, c)
                rows.append((model, f"{replicas} replica(s), batching {'32/10ms' if batch > 1 else 'off'}", c,
                             qps, p50, p99))
                print(rows[-1], file=sys.stderr, flush=True)
            serve.delete("m")
    print("| model | setup | concurrency | req/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|---:|")
    for model, setup, c, qps, p50, p99 in rows:
        print(f"| {model} | {setup} | {c} | {qps:.0f} | {p50:.1f} | {p99:.1f} |")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
