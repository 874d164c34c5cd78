"""``hwdeploy serve`` end to end: its own local Ray (loopback), tritonclient, Ctrl-C stops it cleanly."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import free_port

httpclient = pytest.importorskip("tritonclient.http")


def test_hwdeploy_serve_command_serves_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "hwdeploy", "serve", "zoo:mlp", "--device", "cpu", "--port",
                             str(port), "--num-cpus", "1", "--max-batch-size", "4"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline, ready = time.monotonic() + 150, False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as resp:
                    ready = resp.status == 200
            except OSError:
                time.sleep(0.5)
        log.seek(0)
        assert ready, f"not ready (exit {proc.poll()}):\n{log.read()[-3000:]}"
        with httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60) as client:
            inp = httpclient.InferInput("x", [2, 64], "FP32")
            inp.set_data_from_numpy(np.ones((2, 64), "float32"))
            result = client.infer("mlp", [inp], request_id="cli-1")
        assert result.as_numpy("fetch_name_0").shape == (2, 8)
        assert result.get_response()["id"] == "cli-1"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        log.seek(0)
        text = log.read()
        assert "ready at http://127.0.0.1:" in text
        assert "hwdeploy infer id=cli-1 model=mlp" in text, text[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
