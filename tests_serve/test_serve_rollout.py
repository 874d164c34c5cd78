"""A second model version rolled out under load: no request fails, and the responses switch from the old
model's content hash to the new one (every response carries the hash and the replica's device)."""

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np

import hwdeploy
from hwdeploy import zoo
from hwdeploy.serve import build_app

from conftest import deploy

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.2] * 64}]}).encode()


def infer(url, timeout=30):
    req = urllib.request.Request(f"http://{url}/roll/v2/models/roll/infer", data=BODY, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.loads(resp.read())
            return resp.status, doc["parameters"]["hwdeploy_model_sha256"], doc["outputs"][0]["data"]
    except urllib.error.HTTPError as exc:
        return exc.code, None, exc.read()[:200]


def second_version(tmp_path):
    """The zoo MLP with its last 256 weights shifted by 0.5: a valid model with another hash and other answers."""
    program = zoo.export("mlp", tmp_path / "v2")
    params = program.with_suffix(".pdiparams")
    data = bytearray(params.read_bytes())
    tail = np.frombuffer(bytes(data[-1024:]), np.float32) + np.float32(0.5)
    data[-1024:] = tail.astype(np.float32).tobytes()
    params.write_bytes(bytes(data))
    return hwdeploy.load_model(program)


def test_a_new_model_version_rolls_out_under_load_without_a_failed_request(ray_session, tmp_path):
    from ray import serve

    url = ray_session["url"]
    old, new = zoo.get("mlp").model, second_version(tmp_path)
    assert old.sha256 != new.sha256
    settings = dict(name="roll", device="cpu", options={"threads": 1}, replicas=2, max_batch_size=1,
                    ray_actor_options={"num_cpus": 0.25}, deployment_name="roll")
    deploy(build_app(old, **settings), "roll", "/roll")
    try:
        answers, errors, stop = [], [], threading.Event()

        def load():
            end = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < end and len(answers) < 3000:
                try:
                    answers.append(infer(url))
                except OSError as exc:  # a timeout or a reset connection: a dropped request
                    errors.append(repr(exc))

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(2)
        deploy(build_app(new, **settings), "roll", "/roll")  # returns when the new replicas are ready
        rolled_at = len(answers)
        time.sleep(3)
        stop.set()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the load loop did not finish"
        assert not errors, errors[:5]
        statuses = {status for status, _sha, _data in answers}
        assert statuses == {200}, [a for a in answers if a[0] != 200][:5]
        hashes = [sha for _status, sha, _data in answers]
        assert hashes[0] == old.sha256 and hashes[-1] == new.sha256
        assert set(hashes) == {old.sha256, new.sha256}
        assert set(hashes[rolled_at + 5:]) == {new.sha256}, "old replicas still answered after the rollout"
        # The versions compute differently, and each answer matches its own version's direct run.
        x = np.full((1, 64), 0.2, np.float32)
        direct = {m.sha256: hwdeploy.predictor(m, "cpu", threads=1).run(x)[0].ravel() for m in (old, new)}
        assert not np.allclose(direct[old.sha256], direct[new.sha256])
        for sha in (old.sha256, new.sha256):
            served = next(np.asarray(data, np.float32) for _s, h, data in answers if h == sha)
            np.testing.assert_allclose(served, direct[sha], rtol=1e-5, atol=1e-6)
    finally:
        serve.delete("roll")
