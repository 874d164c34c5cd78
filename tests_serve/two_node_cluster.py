"""A two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), run by ``test_serve_two_nodes.py`` in
its own process: the head node has CPUs only; the second node advertises one ``NPU`` and has the simulated Ascend
CustomDevice (``CUSTOM_DEVICE_ROOT`` in that raylet's environment only). Prints one line, ``REPORT {json}``: where each
replica landed and what its receipt says.

    python tests_serve/two_node_cluster.py SIM_ROOT
"""

import json
import os
import socket
import subprocess
import sys
import urllib.request

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep the node address 127.0.0.1 (see conftest.py)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from hwdeploy.serve import build_app  # noqa: E402


def listeners() -> set[str]:
    """Local addresses of the TCP listening sockets on this machine (``ss -ltnH``)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, timeout=30).stdout
    return {line.split()[3] for line in out.splitlines() if len(line.split()) > 3}


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.loads(resp.read())


def main(sim_root: str) -> None:
    before = listeners()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    npu_node = cluster.add_node(num_cpus=1, resources={"NPU": 1}, node_ip_address="127.0.0.1",
                                env_vars={"CUSTOM_DEVICE_ROOT": sim_root})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        serve.run(build_app("zoo:mlp", "npu", name="on_npu", max_batch_size=1, deployment_name="on_npu",
                            ray_actor_options={"num_cpus": 0.25}), name="npu", route_prefix="/npu")
        serve.run(build_app("zoo:mlp", "cpu", name="on_cpu", max_batch_size=1, deployment_name="on_cpu",
                            ray_actor_options={"num_cpus": 0.25}), name="cpu", route_prefix="/cpu")
        base = f"http://127.0.0.1:{port}"
        nodes = {node["NodeID"]: node["Resources"] for node in ray.nodes() if node["Alive"]}
        report = {"npu_node": npu_node.node_id, "nodes": nodes, "new_listeners": sorted(listeners() - before),
                  "npu": get(f"{base}/npu/v2/models/on_npu/receipt"),
                  "cpu": get(f"{base}/cpu/v2/models/on_cpu/receipt")}
        print("REPORT " + json.dumps(report, default=str), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
