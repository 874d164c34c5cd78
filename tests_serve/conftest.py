"""One local Ray instance per test session, bound to 127.0.0.1; Serve's HTTP proxy on a free loopback port.

Ray replaces a loopback node address by the machine's address unless it runs single-machine
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``): set before Ray is imported, inherited by every Ray process.
The fixture plugins ``fallsim`` (a device whose receipt shows CPU fallback) and ``degradesim`` (one that falls
back after warm-up) are installed through real entry points and put on PYTHONPATH before Ray starts, so every
replica sees them.
"""

import os
import socket

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from hwdeploy.sdk.testing import install_plugin, plugins_on_path  # noqa: E402

FALLSIM = '''
from hwdeploy import Device, hookimpl, Predictor
from hwdeploy.sdk import paddle_inference as pi

KIND = "fallsim"


class FallbackPredictor(Predictor):
    """Paddle Inference on the host CPU; the receipt says so: a device that silently falls back."""

    def __init__(self, model, device, options):
        config = pi.make_config(model, threads=int(options.get("threads", 1)))
        self.inner = pi.PaddleInferencePredictor(model, device, config, actual_device=lambda c: "cpu:0",
                                                 backend="fallsim-runtime", options=options)
        self.model, self.device = model, device
        self.inputs, self.outputs = self.inner.inputs, self.inner.outputs

    def _run(self, inputs):
        return self.inner._run(inputs)

    def _receipt(self):
        return self.inner._receipt()

    def _clone(self):
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.inner = self.inner.clone()
        return twin


@hookimpl
def hwdeploy_discover_devices():
    return [Device(KIND, 0, name="fixture accelerator that computes on the host", backend="fallsim-runtime",
                   priority=-20)]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if device.kind == KIND:
        return FallbackPredictor(model, device, options)
'''


DEGRADESIM = '''
from hwdeploy import Device, hookimpl, Predictor
from hwdeploy.sdk import paddle_inference as pi

KIND = "degradesim"
HEALTHY_RUNS = 3  # the warm-up and a couple of requests run on the device; then the runtime falls back


class DegradingPredictor(Predictor):
    """Paddle Inference whose receipt shows the device for a few runs, then the host CPU: a runtime that
    falls back after warm-up, which only the periodic health check can catch."""

    def __init__(self, model, device, options):
        self.runs = 0
        config = pi.make_config(model, threads=1)
        self.inner = pi.PaddleInferencePredictor(
            model, device, config, backend="degradesim-runtime", options=options,
            actual_device=lambda c: device.id if self.runs <= HEALTHY_RUNS else "cpu:0")
        self.model, self.device = model, device
        self.inputs, self.outputs = self.inner.inputs, self.inner.outputs

    def _run(self, inputs):
        self.runs += 1
        return self.inner._run(inputs)

    def _receipt(self):
        return self.inner._receipt()

    def _clone(self):
        raise NotImplementedError("one replica, one predictor")


@hookimpl
def hwdeploy_discover_devices():
    return [Device(KIND, 0, name="fixture accelerator that falls back after warm-up", backend="degradesim-runtime",
                   priority=-20)]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if device.kind == KIND:
        return DegradingPredictor(model, device, options)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    site = install_plugin(tmp_path_factory.mktemp("plugins"), "fallsim", FALLSIM)
    install_plugin(site, "degradesim", DEGRADESIM)
    with plugins_on_path(site):
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", resources={"fallsim": 2, "degradesim": 2},
                 logging_level="WARNING", _system_config={"metrics_report_interval_ms": 1000})
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            yield {"port": port, "url": f"127.0.0.1:{port}"}
        finally:
            serve.shutdown()
            ray.shutdown()


def deploy(app, name: str, route_prefix: str):
    """serve.run: waits until every replica is warmed up; raises when the deployment fails."""
    serve.run(app, name=name, route_prefix=route_prefix)
