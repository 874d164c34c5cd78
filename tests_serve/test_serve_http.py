"""The Open Inference Protocol over real HTTP on 127.0.0.1, spoken by tritonclient (and plain HTTP for errors)."""

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import hwdeploy
from hwdeploy.sdk.testing import rel_l2
from hwdeploy.serve import build_app

from conftest import deploy

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

SMALL = {"num_cpus": 0.5}  # several apps side by side on the session's 2 CPUs


@pytest.fixture(scope="module")
def apps(ray_session):
    deploy(build_app("zoo:mlp", "cpu", options={"threads": 1}, max_batch_size=16, batch_wait_ms=20,
                     max_request_bytes=1 << 20, ray_actor_options=SMALL, deployment_name="mlp"), "mlp", "/")
    deploy(build_app("zoo:transformer_encoder", "cpu", name="encoder", options={"threads": 1}, max_batch_size=32,
                     batch_wait_ms=30, max_batch_rows=64, ray_actor_options=SMALL, deployment_name="encoder"),
           "encoder", "/encoder")
    yield ray_session


@pytest.fixture(scope="module")
def client(apps):
    with httpclient.InferenceServerClient(apps["url"], concurrency=32, connection_timeout=60,
                                          network_timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def direct():
    return {"mlp": hwdeploy.predictor("zoo:mlp", device="cpu", threads=1),
            "encoder": hwdeploy.predictor("zoo:transformer_encoder", device="cpu", threads=1)}


def http(apps, method, path, body=None, headers=None, timeout=60):
    req = urllib.request.Request(f"http://{apps['url']}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


MLP_OUT = "fetch_name_0"  # checked against the predictor below


def infer_mlp(client, x, binary=True, request_id=""):
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput(MLP_OUT, binary_data=binary)
    return client.infer("mlp", [inp], outputs=[out], request_id=request_id)


def test_tritonclient_health_metadata_and_infer(client, direct):
    assert direct["mlp"].output_names == [MLP_OUT]
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
    meta = client.get_model_metadata("mlp")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["parameters"]["hwdeploy_model_sha256"] == direct["mlp"].model.sha256
    x = np.random.default_rng(1).standard_normal((3, 64)).astype("float32")
    expected = direct["mlp"].run(x)[0]
    for binary in (True, False):
        result = infer_mlp(client, x, binary=binary, request_id=f"req-{binary}")
        got = result.as_numpy(MLP_OUT)
        assert got.shape == expected.shape and rel_l2(got, expected) < 1e-5
        response = result.get_response()
        assert response["id"] == f"req-{binary}"
        assert response["parameters"]["hwdeploy_model_sha256"] == direct["mlp"].model.sha256
        assert response["parameters"]["hwdeploy_device"] == "cpu:0"
    # No outputs named: tritonclient asks for every output in binary.
    inp = httpclient.InferInput("x", [2, 64], "FP32")
    inp.set_data_from_numpy(x[:2])
    got = client.infer("mlp", [inp]).as_numpy(MLP_OUT)
    assert rel_l2(got, direct["mlp"].run(x[:2])[0]) < 1e-5


def test_int64_tokens_and_route_prefix(apps, direct):
    with httpclient.InferenceServerClient(apps["url"] + "/encoder", network_timeout=60) as c:
        tokens = np.random.default_rng(2).integers(0, 1000, (2, 12)).astype("int64")
        inp = httpclient.InferInput("tokens", [2, 12], "INT64")
        inp.set_data_from_numpy(tokens)
        got = c.infer("encoder", [inp]).as_numpy(direct["encoder"].output_names[0])
    assert rel_l2(got, direct["encoder"].run(tokens)[0]) < 1e-5


def test_concurrent_requests_get_exactly_their_own_rows(apps, direct):
    """Different batch sizes and sequence lengths at once: batched where they fit, never mixed."""
    rng = np.random.default_rng(3)
    requests = [rng.integers(0, 1000, (1 + i % 4, (8, 16, 24)[i % 3])).astype("int64") for i in range(36)]
    expected = [direct["encoder"].run(t)[0] for t in requests]
    name = direct["encoder"].output_names[0]
    with httpclient.InferenceServerClient(apps["url"] + "/encoder", concurrency=36, network_timeout=120) as c:
        def one(tokens):
            inp = httpclient.InferInput("tokens", list(tokens.shape), "INT64")
            inp.set_data_from_numpy(tokens)
            return c.async_infer("encoder", [inp])

        deadline = time.monotonic() + 120
        for _round in range(2):  # the first round may meet a cold batch queue; both must be exact
            pending = [one(t) for t in requests]
            results = [p.get_result(timeout=max(1, deadline - time.monotonic())) for p in pending]
            shared = [r.get_response()["parameters"]["hwdeploy_batch_requests"] for r in results]
            for i, (result, want) in enumerate(zip(results, expected)):
                got = result.as_numpy(name)
                assert got.shape == want.shape, (i, got.shape, want.shape)
                assert rel_l2(got, want) < 1e-4, f"request {i} got rows that are not its own"
            if max(shared) > 1:
                break
    assert max(shared) > 1, f"no request was batched: {shared}"


BAD = [
    ("wrong shape", {"inputs": [{"name": "x", "shape": [2, 63], "datatype": "FP32", "data": [0.0] * 126}]},
     "shape [2, 63] does not match"),
    ("wrong dtype", {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [0.0] * 64}]},
     "dtype float64 does not match the model's float32"),
    ("wrong name", {"inputs": [{"name": "y", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
     "unknown: ['y']"),
    ("data/shape mismatch", {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 3}]},
     "3 element(s) of data for shape [1, 64]"),
    ("NaN", {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [float("nan")] * 64}]},
     "NaN/Inf"),
    ("unknown output", {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}],
                        "outputs": [{"name": "nope"}]}, "unknown output(s) ['nope']"),
    ("bad datatype", {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "BYTES", "data": ["a"] * 64}]},
     "datatype 'BYTES' is not supported"),
]


@pytest.mark.parametrize("case,doc,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_400_with_the_hwdeploy_message(apps, case, doc, message):
    body = json.dumps(doc).replace("NaN", "NaN").encode()
    status, headers, payload = http(apps, "POST", "/v2/models/mlp/infer", body, {"X-Request-Id": f"bad-{case}"})
    assert status == 400, payload
    error = json.loads(payload)["error"]
    assert message in error, error
    assert headers.get("x-request-id") == f"bad-{case}"


def test_malformed_oversized_and_binary_mismatch_are_400_and_the_replica_is_unharmed(apps, client):
    pid = json.loads(http(apps, "GET", "/v2/models/mlp/receipt")[2])["placement"]["pid"]
    status, _, payload = http(apps, "POST", "/v2/models/mlp/infer", b'{"inputs": [', {})
    assert status == 400 and "malformed JSON" in json.loads(payload)["error"]
    status, _, payload = http(apps, "POST", "/v2/models/mlp/infer", b"0" * (2 << 20), {})
    assert status == 400 and "exceeds the limit" in json.loads(payload)["error"]
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 256}}]}).encode()
    status, _, payload = http(apps, "POST", "/v2/models/mlp/infer", header + b"\0" * 100,
                              {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "binary_data_size 256" in json.loads(payload)["error"]
    with pytest.raises(InferenceServerException, match="does not match"):
        inp = httpclient.InferInput("x", [1, 8], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 8), "float32"))
        client.infer("mlp", [inp])
    x = np.ones((1, 64), "float32")
    assert infer_mlp(client, x).as_numpy(MLP_OUT).shape[0] == 1
    assert json.loads(http(apps, "GET", "/v2/models/mlp/receipt")[2])["placement"]["pid"] == pid


def test_receipt_endpoint_and_request_ids(apps, direct):
    status, _, payload = http(apps, "GET", "/v2/models/mlp/receipt")
    assert status == 200
    doc = json.loads(payload)
    assert doc["receipt"]["actual"] == "cpu:0" and doc["receipt"]["fallback_reasons"] == []
    assert doc["receipt"]["model"]["sha256"] == direct["mlp"].model.sha256
    assert doc["placement"]["node_ip"] == "127.0.0.1" and doc["placement"]["resources"]["num_cpus"] == 1.0
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}).encode()
    status, headers, payload = http(apps, "POST", "/v2/models/mlp/infer", body, {"X-Request-Id": "abc-123"})
    assert status == 200 and json.loads(payload)["id"] == "abc-123" and headers["x-request-id"] == "abc-123"
    status, headers, payload = http(apps, "POST", "/v2/models/mlp/infer", body)
    assert status == 200 and json.loads(payload)["id"] == headers["x-request-id"] != ""
    assert http(apps, "GET", "/v2/models/nosuch")[0] == 404
    assert http(apps, "GET", "/v2/models/mlp/versions/2")[0] == 404
    assert http(apps, "GET", "/v2/models/mlp/versions/1/ready")[0] == 200


def test_metrics_reach_rays_prometheus_endpoint(apps, client):
    import ray

    x = np.ones((2, 64), "float32")
    for _ in range(3):
        infer_mlp(client, x)
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.monotonic() + 60, ""
    wanted = ("ray_hwdeploy_requests", "ray_hwdeploy_request_latency_ms_bucket", "ray_hwdeploy_batch_size_bucket",
              "ray_hwdeploy_request_errors")
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        if all(w in text for w in wanted):
            break
        time.sleep(1)
    missing = [w for w in wanted if w not in text]
    assert not missing, f"metrics missing after 60 s: {missing}"
    assert 'kind="InputError"' in text or 'kind="ProtocolError"' in text
