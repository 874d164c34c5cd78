"""NVML utilisation sampling while a workload runs (for the conformance suite's "is the GPU really busy?")."""

from __future__ import annotations

import threading
import time
from typing import Any

from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError


class NvmlSampler:
    """Polls ``nvmlDeviceGetUtilizationRates`` for one GPU on a background thread.

    ``start()`` raises :class:`hwdeploy.BackendError` saying why when NVML is
    unusable (no driver); ``stop()`` returns ``samples``, ``mean_busy`` and
    ``max_busy`` (fractions 0..1) and the peak memory used in bytes. NVML's
    figure is the share of the last sample period (1/6 s to 1 s, by board) in
    which a kernel ran, so runs shorter than a second read low.
    """

    def __init__(self, device: Device, interval: float = 0.05):
        self.device = device
        self.interval = interval
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._busy: list[float] = []
        self._memory: list[int] = []
        self._error = ""

    def _handle(self, pynvml):
        uuid = self.device.details.get("uuid")
        if uuid:
            return pynvml.nvmlDeviceGetHandleByUUID(uuid)
        return pynvml.nvmlDeviceGetHandleByIndex(int(self.device.details.get("nvml_index", self.device.index)))

    def start(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise BackendError(f"NVML sampler for {self.device.id}: cannot import pynvml ({exc}); pip install"
                               f" nvidia-ml-py") from None
        try:
            pynvml.nvmlInit()
            handle = self._handle(pynvml)
        except pynvml.NVMLError as exc:
            raise BackendError(f"NVML sampler for {self.device.id}: NVML unusable ({exc}); is the NVIDIA driver"
                               f" installed and the GPU visible?") from None
        self._busy, self._memory, self._error = [], [], ""
        self._stop.clear()

        def loop() -> None:
            try:
                while not self._stop.is_set():
                    self._busy.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
                    self._memory.append(int(pynvml.nvmlDeviceGetMemoryInfo(handle).used))
                    self._stop.wait(self.interval)
            except pynvml.NVMLError as exc:
                self._error = str(exc)
            finally:
                try:
                    pynvml.nvmlShutdown()
                except pynvml.NVMLError:
                    pass

        self._thread = threading.Thread(target=loop, name=f"hwdeploy-nvml-{self.device.id}", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        if self._thread is None:
            raise RuntimeError("NvmlSampler.stop() before start()")
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        busy = list(self._busy)
        result: dict[str, Any] = {"samples": len(busy), "mean_busy": sum(busy) / len(busy) if busy else 0.0,
                                  "max_busy": max(busy, default=0.0), "max_memory_used": max(self._memory, default=0),
                                  "source": "nvml", "device": self.device.id, "at": time.time()}
        if self._error:
            result["error"] = self._error
        return result
