"""Loopback only, health from the receipt (fallback allowed vs refused), custom resources, Ray Data."""

import json
import time
import urllib.request

import numpy as np
import psutil
import pytest

import hwdeploy
from hwdeploy.sdk.testing import rel_l2
from hwdeploy.serve import build_app

from conftest import deploy


def ray_listeners():
    """(address, port, process) of every listening TCP socket of this process and its descendants (Ray's)."""
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            found.append((conn.laddr.ip, conn.laddr.port, name))
    return found


def is_loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return address.is_loopback


@pytest.fixture(scope="module")
def fallsim_allowed(ray_session):
    deploy(build_app("zoo:mlp", "fallsim", name="mlpsim", fallback="allow", max_batch_size=1,
                     ray_actor_options={"num_cpus": 0.25}, deployment_name="fallsim"), "fallsim", "/fallsim")
    return ray_session


def get(session, path):
    with urllib.request.urlopen(f"http://{session['url']}{path}", timeout=60) as resp:
        return resp.status, json.loads(resp.read())


def test_a_policy_that_allows_fallback_serves_and_says_so(fallsim_allowed):
    status, doc = get(fallsim_allowed, "/fallsim/v2/models/mlpsim/receipt")
    assert status == 200
    assert doc["receipt"]["requested"].startswith("fallsim") and doc["receipt"]["actual"] == "cpu:0"
    assert any("runs on cpu:0" in r for r in doc["receipt"]["fallback_reasons"])
    # Placed through the custom resource named after the device kind.
    assert doc["placement"]["resources"]["resources"] == {"fallsim": 1}
    assert get(fallsim_allowed, "/fallsim/v2/models/mlpsim/ready")[0] == 200
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.1] * 64}]})
    req = urllib.request.Request(f"http://{fallsim_allowed['url']}/fallsim/v2/models/mlpsim/infer",
                                 data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        params = json.loads(resp.read())["parameters"]
    assert params["hwdeploy_fell_back"] is True and params["hwdeploy_device"] == "fallsim:0"


def test_a_policy_that_refuses_fallback_fails_the_deployment_with_the_evidence(ray_session):
    from ray import serve

    app = build_app("zoo:mlp", "fallsim", name="refused", fallback="error", max_batch_size=1,
                    ray_actor_options={"num_cpus": 0.25}, deployment_name="refused")
    with pytest.raises(Exception) as info:
        deploy(app, "refused", "/refused")
    status = serve.status().applications["refused"]
    text = str(info.value) + status.message + "".join(d.message for d in status.deployments.values())
    assert "FallbackError" in text and "cpu:0" in text, text[-2000:]
    serve.delete("refused")


def test_nothing_ray_started_listens_beyond_loopback(fallsim_allowed):
    listeners = ray_listeners()
    assert any(name.startswith(("gcs_server", "raylet")) for _, _, name in listeners), listeners
    exposed = [entry for entry in listeners if not is_loopback(entry[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_ray_data_map_batches_scores_a_dataset(ray_session):
    import ray

    from hwdeploy.serve.data import BatchPredictor

    x = np.random.default_rng(5).standard_normal((40, 64)).astype("float32")
    ds = ray.data.from_items([{"x": row, "id": i} for i, row in enumerate(x)])
    scored = ds.map_batches(BatchPredictor, fn_constructor_args=("zoo:mlp",),
                            fn_constructor_kwargs={"device": "cpu", "threads": 1}, batch_size=16,
                            batch_format="numpy", concurrency=1,
                            **{**BatchPredictor.resources("cpu"), "num_cpus": 0.25})
    rows = sorted(scored.take_all(), key=lambda r: r["id"])
    assert len(rows) == 40
    got = np.stack([r["fetch_name_0"] for r in rows])
    expected = hwdeploy.predictor("zoo:mlp", device="cpu", threads=1).run(x)[0]
    assert rel_l2(got, expected) < 1e-5
    assert {r["hwdeploy_device"] for r in rows} == {"cpu:0"}


def test_a_replica_whose_runtime_falls_back_after_warm_up_is_replaced(ray_session):
    """Readiness saw the device; later runs fall back to the CPU. The periodic health check reads the receipt
    again, fails the replica (fallback="error"), and Ray replaces it with a fresh one."""
    from ray import serve

    deploy(build_app("zoo:mlp", "degradesim", name="degrading", fallback="error", max_batch_size=1,
                     health_check_period_s=1, ray_actor_options={"num_cpus": 0.25}, deployment_name="degrading"),
           "degrading", "/degrading")
    try:
        status, first = get(ray_session, "/degrading/v2/models/degrading/receipt")
        assert status == 200 and first["receipt"]["actual"] == "degradesim:0", first["receipt"]
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.1] * 64}]})
        for _ in range(6):  # past the runs the fixture keeps on the device
            req = urllib.request.Request(f"http://{ray_session['url']}/degrading/v2/models/degrading/infer",
                                         data=body.encode(), method="POST")
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200
        deadline, now = time.monotonic() + 90, first
        while time.monotonic() < deadline:
            try:
                status, now = get(ray_session, "/degrading/v2/models/degrading/receipt")
            except OSError:  # 503 while the only replica is being replaced
                status = None
            if status == 200 and now["placement"]["pid"] != first["placement"]["pid"]:
                break
            time.sleep(1)
        assert now["placement"]["pid"] != first["placement"]["pid"], "the replica that fell back was not replaced"
        assert now["receipt"]["actual"] == "degradesim:0" and not now["receipt"]["fallback_reasons"]
    finally:
        serve.delete("degrading")
