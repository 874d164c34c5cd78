"""Pure parts, no Ray: resources, the protocol codec, batching plans; and the CLI plugin's lazy import."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hwdeploy.errors import InputError, OptionError
from hwdeploy.serve import batching, protocol
from hwdeploy.serve.resources import ray_resources, replica_device


def test_device_kinds_map_to_ray_resources():
    assert ray_resources("cpu") == {"num_cpus": 1.0}
    assert ray_resources("cpu", threads=2) == {"num_cpus": 2.0}
    assert ray_resources("gpu:1") == {"num_cpus": 1.0, "num_gpus": 1}
    assert ray_resources("npu") == {"num_cpus": 1.0, "resources": {"NPU": 1}}
    assert ray_resources("mlu:3") == {"num_cpus": 1.0, "resources": {"mlu": 1}}
    assert ray_resources("acme") == {"num_cpus": 1.0, "resources": {"acme": 1}}
    with pytest.raises(OptionError):
        ray_resources("auto:fastest")
    with pytest.raises(OptionError):
        ray_resources("cpu", threads=0)
    assert replica_device("gpu:3", {"GPU": ["3"]}) == "gpu:0"
    assert replica_device("npu:1", {"NPU": ["1"]}) == "npu:0"
    assert replica_device("gpu:3", {}) == "gpu:3"
    assert replica_device("mlu:2", {"GPU": []}) == "mlu:2"


def binary_request(arrays, outputs=None):
    inputs, chunks = [], []
    for name, a in arrays.items():
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        inputs.append({"name": name, "shape": list(a.shape), "datatype": protocol.datatype_of(a.dtype),
                       "parameters": {"binary_data_size": len(raw)}})
        chunks.append(raw)
    header = json.dumps({"inputs": inputs, "outputs": outputs, "id": "r1"}).encode()
    return header + b"".join(chunks), str(len(header))


def test_binary_and_json_requests_round_trip():
    a, b = np.arange(6, dtype="float32").reshape(2, 3), np.array([[1, 2]], dtype="int64")
    body, length = binary_request({"a": a, "b": b}, outputs=[{"name": "y", "parameters": {"binary_data": True}}])
    req = protocol.parse_infer_request(body, length, max_bytes=1 << 20)
    assert req.id == "r1" and req.outputs == {"y": True}
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)
    doc = {"inputs": [{"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [[0, 1, 2], [3, 4, 5]]}]}
    np.testing.assert_array_equal(protocol.parse_infer_request(json.dumps(doc).encode(), None, max_bytes=1 << 20)
                                  .inputs["a"], a)
    y = np.linspace(0, 1, 8, dtype="float32").reshape(2, 4)
    payload, headers = protocol.encode_infer_response(req, "m", ["y"], [y], {"k": 1})
    n = int(headers[protocol.HEADER_LENGTH])
    head = json.loads(payload[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == y.nbytes and head["id"] == "r1"
    np.testing.assert_array_equal(np.frombuffer(payload[n:], "<f4").reshape(2, 4), y)
    req.outputs = None
    payload, headers = protocol.encode_infer_response(req, "m", ["y"], [y], {})
    assert protocol.HEADER_LENGTH not in headers and json.loads(payload)["outputs"][0]["data"] == y.ravel().tolist()


@pytest.mark.parametrize("body,length,message", [
    (b"not json", None, "malformed JSON"),
    (b"[]", None, "JSON object"),
    (b'{"inputs": []}', None, "non-empty 'inputs'"),
    (b'{"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}]}', None, "non-negative"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}', None, "neither 'data'"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": ["x"]}]}', None, "not FP32"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}xx', "999", "does not fit"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', "abc", "not an integer"),
])
def test_malformed_requests_raise_protocol_errors(body, length, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("'", "'")):
        protocol.parse_infer_request(body, length, max_bytes=1 << 20)
    with pytest.raises(protocol.ProtocolError, match="exceeds the limit"):
        protocol.parse_infer_request(b"x" * 11, None, max_bytes=10)


def test_batching_stacks_only_matching_requests_and_splits_back_exactly():
    rng = np.random.default_rng(0)
    reqs = [[rng.standard_normal((n, d)).astype("float32")] for n, d in [(1, 4), (2, 4), (3, 5), (1, 4), (5, 4)]]
    assert batching.plan(reqs, max_rows=None) == [[0, 1, 3, 4], [2]]
    assert batching.plan(reqs, max_rows=4) == [[0, 1, 3], [2], [4]]
    runs = []

    def run(arrays):
        runs.append(arrays[0].shape)
        return [arrays[0] * 2, arrays[0].sum(axis=1)]

    results = batching.run_batched(run, reqs, max_rows=4)
    for req, (outs, shared) in zip(reqs, results):
        np.testing.assert_array_equal(outs[0], req[0] * 2)
        np.testing.assert_allclose(outs[1], req[0].sum(axis=1), rtol=1e-6)
    assert [r[1] for r in results] == [3, 3, 1, 3, 1] and len(runs) == 3


def test_outputs_that_are_not_per_row_are_never_split():
    reqs = [[np.ones((2, 3), "float32")], [np.zeros((1, 3), "float32")]]
    results = batching.run_batched(lambda a: [a[0].sum(keepdims=True).reshape(1)], reqs, max_rows=None)
    assert [r[0][0].tolist() for r in results] == [[6.0], [0.0]] and [r[1] for r in results] == [1, 1]


def test_one_failing_request_does_not_fail_its_neighbours():
    def run(arrays):
        if (arrays[0] < 0).any():
            raise ValueError("negative")
        return [arrays[0] + 1]

    reqs = [[np.ones((1, 2))], [-np.ones((1, 2))], [np.ones((2, 2))]]
    results = batching.run_batched(run, reqs, max_rows=None)
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0][0][0], np.full((1, 2), 2.0))
    np.testing.assert_array_equal(results[2][0][0], np.full((2, 2), 2.0))


def run_python(code, timeout=120):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_the_serve_command_is_a_plugin_and_hwdeploy_stays_ray_free():
    out = run_python("import sys, hwdeploy\nfrom hwdeploy.cli import build_parser\n"
                     "_, cmds = build_parser(); hwdeploy.devices()\n"
                     "print(cmds.get('serve'), sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'starlette')))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["serve", "[]"], out.stdout


def test_without_ray_the_command_says_what_to_install():
    out = run_python("import sys\nsys.modules['ray'] = None\nfrom hwdeploy.cli import main\n"
                     "sys.exit(main(['serve', 'zoo:mlp', '--device', 'cpu']))")
    assert out.returncode == 2, out.stderr
    assert "pip install 'hwdeploy[serve]'" in out.stderr
