"""Shared parts of the fault-injection fixture plugins (installed as ``hwdeploy_test_faultkit``).

Each fixture "device" really runs Paddle Inference on the host CPU (the CPU
reference's own runtime, so everything but the injected fault is realistic)
and reports its own device kind, so hwdeploy routes ``--device KIND`` to it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from hwdeploy import Device, Predictor
from hwdeploy.sdk import paddle_inference as pi

#: Executions each fixture device performed ("kernel launches"); utilisation samplers read it.
DEVICE_ACTIVITY: Counter = Counter()


def host_device(kind: str, name: str) -> Device:
    """A fixture device that honestly declares it computes on the host CPU."""
    return Device(kind, 0, name=name, backend="fault-fixture", priority=-10, host_compute=True,
                  versions={"paddlepaddle": pi.paddle_version()})


class WrappedPredictor(Predictor):
    """Paddle Inference on the CPU, reported as ``device``; subclasses inject the fault."""

    def __init__(self, model, device: Device, options: dict):
        config = pi.make_config(model, threads=int(options.get("threads", 1)))
        self.inner = pi.PaddleInferencePredictor(model, device, config, actual_device=lambda c: device.id,
                                                 backend="fault-fixture", options=options)
        self.model, self.device = model, device
        self.inputs, self.outputs = self.inner.inputs, self.inner.outputs
        self.reset()

    def reset(self) -> None:
        """Per-instance state (a clone starts fresh)."""

    def compute(self, inputs):
        DEVICE_ACTIVITY[self.device.kind] += 1
        return self.inner._run(inputs)

    def _run(self, inputs):
        return self.compute(inputs)

    def _receipt(self):
        return self.inner._receipt()

    def _clone(self):
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.inner = self.inner.clone()
        twin.reset()
        return twin

    def close(self) -> None:
        self.inner.close()


class ActivitySampler:
    """Utilisation sampler: the device is busy in a 10 ms tick when it executed something in it."""

    def __init__(self, kind: str, interval: float = 0.01):
        self.kind, self.interval = kind, interval
        self.busy: list[int] = []
        self._stop = threading.Event()

    def _loop(self) -> None:
        last = DEVICE_ACTIVITY[self.kind]
        while not self._stop.wait(self.interval):
            now = DEVICE_ACTIVITY[self.kind]
            self.busy.append(int(now != last))
            last = now

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        n = len(self.busy)
        return {"samples": n, "mean_busy": sum(self.busy) / n if n else 0.0,
                "max_busy": float(max(self.busy, default=0)), "interval_s": self.interval}


def check_kind(device: Device, kind: str) -> bool:
    return device.kind == kind and device.backend == "fault-fixture"


def now() -> float:
    return time.perf_counter()
