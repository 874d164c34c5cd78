"""Placement on a two-node cluster: only one node advertises an ``NPU`` and has the (simulated) device; the npu
replica lands there and its receipt says ``npu:0``, with every op on the device; a cpu replica lands anywhere.

The cluster (``ray.cluster_utils.Cluster``) runs in a child process (``two_node_cluster.py``): this session's
own Ray instance stays as it is. Everything binds to 127.0.0.1 and the child is bounded in time.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def sim_root():
    kit = pytest.importorskip("hwdeploy_customdevice.testing.kit", reason="needs hwdeploy-customdevice")
    pytest.importorskip("hwdeploy_ascend", reason="needs the hwdeploy-ascend plugin (the npu replica's device)")
    return kit.sim_root("npu", "ASCEND_RT_VISIBLE_DEVICES")


def test_the_npu_replica_lands_on_the_npu_node_and_its_receipt_says_npu0(sim_root):
    proc = subprocess.run([sys.executable, str(HERE / "two_node_cluster.py"), str(sim_root)], capture_output=True,
                          text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert len(report["nodes"]) == 2 and sum("NPU" in r for r in report["nodes"].values()) == 1
    npu = report["npu"]
    assert npu["placement"]["node_id"] == report["npu_node"], (npu["placement"], report["npu_node"])
    assert npu["placement"]["accelerator_ids"].get("NPU") == ["0"], npu["placement"]
    receipt = npu["receipt"]
    assert receipt["actual"] == "npu:0" and receipt["requested"] == "npu:0" and not receipt["fallback_reasons"], receipt
    assert receipt["ops"] and {op["device"] for op in receipt["ops"]} == {"npu:0"}
    assert report["cpu"]["receipt"]["actual"] == "cpu:0"
    assert report["cpu"]["placement"]["node_id"] in report["nodes"]
    beyond = [a for a in report["new_listeners"] if not a.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))]
    assert report["new_listeners"] and not beyond, report["new_listeners"]
