"""``import hwdeploy`` and ``hwdeploy.devices()`` stay cheap: no heavy runtime imported, probes cached.

Each check runs in a fresh interpreter (this test process may already have
imported Paddle). Whatever plugins are installed take part: a plugin that
imports its runtime at module level, or probes a driver on every call,
fails here.
"""

import json
import subprocess
import sys
import textwrap

HEAVY = ("paddle", "paddle2onnx", "onnx", "onnxruntime", "openvino", "paddlelite", "playwright", "pynvml", "torch",
         "tensorflow")

CHILD = textwrap.dedent("""
    import json, subprocess, sys, time
    spawned = []
    real_popen = subprocess.Popen.__init__

    def counting_popen(self, args, *a, **k):
        spawned.append(str(args)[:200])
        real_popen(self, args, *a, **k)

    subprocess.Popen.__init__ = counting_popen
    t0 = time.perf_counter()
    import hwdeploy
    t1 = time.perf_counter()
    heavy_after_import = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    found = hwdeploy.devices()
    t2 = time.perf_counter()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    print(json.dumps({"import_s": t1 - t0, "devices_s": t2 - t1, "heavy_after_import": heavy_after_import,
                      "heavy": heavy, "spawned": spawned, "devices": [f"{d.id}/{d.backend}" for d in found]}))
""")


def run_child(env_cache):
    import os

    env = dict(os.environ, HWDEPLOY_CACHE_DIR=str(env_cache))
    code = f"HEAVY = {HEAVY!r}\n" + CHILD
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_discovery_import_no_heavy_runtime(tmp_path):
    report = run_child(tmp_path / "cache")
    assert report["heavy_after_import"] == []
    assert report["heavy"] == [], f"devices() imported {report['heavy']}"
    assert any(d.startswith("cpu:0/") for d in report["devices"])


def test_second_discovery_is_served_from_the_probe_cache(tmp_path):
    run_child(tmp_path / "cache")  # first run may probe drivers in subprocesses
    again = run_child(tmp_path / "cache")
    assert again["spawned"] == [], f"devices() started processes again: {again['spawned']}"
    assert again["heavy"] == []
