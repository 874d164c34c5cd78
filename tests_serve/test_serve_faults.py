"""A replica killed with SIGKILL mid-load: every request is answered (success or a clear 5xx), none hangs,
and Ray's replacement serves."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

from hwdeploy.serve import build_app

from conftest import deploy

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.2] * 64}]}).encode()


def call(url, path, data=None, timeout=30):
    req = urllib.request.Request(f"http://{url}{path}", data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def replica_pids(url, tries=40):
    return {json.loads(call(url, "/kill/v2/models/killme/receipt")[1])["placement"]["pid"] for _ in range(tries)}


def test_sigkill_of_a_replica_mid_load_answers_every_request(ray_session):
    from ray import serve

    url = ray_session["url"]
    deploy(build_app("zoo:mlp", "cpu", name="killme", replicas=2, max_batch_size=1, health_check_period_s=1,
                     ray_actor_options={"num_cpus": 0.25}, deployment_name="killme"), "kill", "/kill")
    try:
        before = replica_pids(url)
        assert len(before) == 2, before
        statuses, hung = [], []

        def load():
            end = time.monotonic() + 20
            while time.monotonic() < end and len(statuses) < 400:
                try:
                    statuses.append(call(url, "/kill/v2/models/killme/infer", BODY)[0])
                except OSError as exc:  # a timeout here is a hung request
                    hung.append(repr(exc))

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(2)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        worker.join(timeout=90)
        assert not worker.is_alive(), "the load loop did not finish"
        assert not hung, hung[:5]
        assert statuses and all(s == 200 or 500 <= s < 600 for s in statuses), sorted(set(statuses))
        assert statuses[-1] == 200, statuses[-20:]
        deadline, now = time.monotonic() + 90, set()
        while time.monotonic() < deadline:
            now = replica_pids(url, tries=10)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(1)
        assert victim not in now and len(now) == 2, (before, now)
        assert call(url, "/kill/v2/models/killme/infer", BODY)[0] == 200
    finally:
        serve.delete("kill")
