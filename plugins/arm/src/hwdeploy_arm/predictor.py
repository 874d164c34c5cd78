"""The Paddle Lite :class:`~hwdeploy.Predictor`: MobileConfig on a ``.nb`` in a worker process."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwdeploy.contract.records import Device
from hwdeploy.errors import ModelFormatError
from hwdeploy.contract.model import Model, TensorSpec
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.receipt import OpPlacement, Receipt

from hwdeploy_arm import nb as nbfile
from hwdeploy_arm.worker import DEFAULT_TIMEOUT, LiteWorker

BACKEND = "paddle-lite"
#: Lite kernel target -> the hwdeploy device kind that runs it (x86 Lite is one of the cpu backends).
_HOST_KINDS = {"x86": "cpu", "arm": "arm"}


def host_kind(machine: str | None = None) -> str | None:
    """``"x86"`` or ``"arm"`` for this machine's CPU (the Lite kernels it can run), else None."""
    arch = (machine or platform.machine()).lower()
    if arch in ("x86_64", "amd64"):
        return "x86"
    if arch.startswith(("aarch64", "arm")):
        return "arm"
    return None


def check_options(threads: Any, power_mode: Any, timeout: Any) -> None:
    """The Lite options of :data:`hwdeploy_arm.plugin.OPTIONS`, for a ``LitePredictor`` built directly."""
    from hwdeploy_arm.plugin import OPTIONS

    OPTIONS.check({"threads": threads, "power_mode": power_mode, "timeout": timeout})


class LitePredictor(Predictor):
    """Runs a ``.nb`` with Paddle Lite's MobileConfig in a :class:`~hwdeploy_arm.worker.LiteWorker`.

    Before loading, the ``.nb``'s kernels are checked against what this host's Lite runtime can
    execute (:func:`hwdeploy_arm.nb.check_runnable`): an ARM or NNAdapter ``.nb`` on an x86 host is
    refused with :class:`~hwdeploy_arm.nb.UnrunnableModelError` instead of returning garbage.

    Each predictor owns one worker process (Lite's x86 math threads are per process); a crash in
    it raises :class:`~hwdeploy_arm.worker.LiteWorkerError` and the next run reloads the model in
    a fresh worker. ``clone()`` starts another worker: clones run truly in parallel.
    """

    backend = BACKEND

    def __init__(self, nb_path: str | Path, device: Device, *, model: Model | None = None,
                 inputs: Sequence[TensorSpec] | None = None, outputs: Sequence[TensorSpec] | None = None,
                 threads: int = 1, power_mode: str | None = None, timeout: float | None = DEFAULT_TIMEOUT,
                 check_finite: bool = True, python: str | None = None, report: dict | None = None):
        check_options(threads, power_mode, timeout)
        self.nb_path = Path(nb_path)
        try:
            self.nb = nbfile.read_nb(self.nb_path)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{nb_path}: cannot use as a Paddle Lite model: {exc}", nb_path) from None
        self.model = model or Model(self.nb_path, None, "nb", self.nb_path.stem)  # type: ignore[arg-type]
        self.threads, self.power_mode, self.timeout = threads, power_mode, timeout
        self.check_finite = check_finite
        self.report = report or {}
        self._args = dict(model=model, inputs=inputs, outputs=outputs, threads=threads, power_mode=power_mode,
                          timeout=timeout, check_finite=check_finite, python=python, report=report)
        self._requested = device
        self.worker = LiteWorker(python, threads=threads, name=f"lite-{device.kind}")
        try:
            self.worker.start()
            nbfile.check_runnable(self.nb, self.worker.info["machine"], self.worker.info)
            self._load()
        except BaseException:
            self.worker.close()
            raise
        self.inputs = list(inputs) if inputs else [TensorSpec(n, (), "") for n in self._loaded["inputs"]]
        self.outputs = list(outputs) if outputs else [TensorSpec(n, (), "") for n in self._loaded["outputs"]]
        self.device = device
        self.last_run_seconds: float | None = None
        #: Extra facts for the receipt (e.g. why this engine was chosen).
        self.notes: list[str] = []

    @property
    def applied(self) -> dict[str, Any]:
        """The MobileConfig settings the runtime accepted (``threads``/``power_mode`` on ARM builds)."""
        return dict(self._loaded.get("applied", {}))

    def _load(self) -> None:
        npu = self.report.get("nnadapter_device") if self.nb.uses_nnadapter else None
        self._loaded = self.worker.request("load", nb=str(self.nb_path), threads=self.threads,
                                           power_mode=self.power_mode, timeout=self.timeout,
                                           nnadapter_devices=[npu] if npu else None)
        self._generation = self.worker.generation

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self.worker.generation != self._generation or not self.worker.alive:
            self._load()  # the worker crashed (or was closed) since: reload in a fresh one
        outputs, self.last_run_seconds = self.worker.run(self._loaded["handle"], inputs, self.timeout)
        return outputs

    def actual_device(self) -> str:
        """The device the loaded kernels run on, from the ``.nb`` and the worker's own machine."""
        kinds = {_HOST_KINDS[t] for t in self.nb.compute_targets if t in _HOST_KINDS}
        if len(kinds) == 1 and not self.nb.compute_targets - set(_HOST_KINDS):
            return f"{kinds.pop()}:0"
        return f"{_HOST_KINDS.get(host_kind(self.worker.info.get('machine')) or '', 'cpu')}:0"

    def _receipt(self) -> Receipt:
        actual = self.actual_device()
        info = self.worker.info
        receipt = Receipt(requested=self._requested.id, actual=actual, backend=BACKEND,
                          runtime_versions={"paddlelite": info.get("lite_version", ""),
                                            "lite_python": info.get("python", "")},
                          options={"threads": self.threads, "power_mode": self.power_mode, "timeout": self.timeout})
        for (op, target), count in sorted(self.nb.kernels.items()):
            if op in nbfile.IO_OPS:
                continue
            on_cpu = target in nbfile.PORTABLE_TARGETS or target in _HOST_KINDS
            receipt.ops.append(OpPlacement(op, actual if on_cpu else target, count,
                                           "" if on_cpu else f"opt placed its kernel on {target}"))
        receipt.ops_known = True
        receipt.evidence.append(f"{self.nb_path.name}: Lite {self.nb.version}, kernels per target"
                                f" {dict(self.nb.targets)} (read from the optimised program)")
        receipt.evidence.append(f"Lite worker pid {self.worker.pid} on {info.get('machine')} (Python {info.get('python')},"
                                f" paddlelite at {info.get('package_dir')})")
        applied = self.applied
        if self.power_mode and "power_mode" not in applied:
            receipt.evidence.append(f"power_mode={self.power_mode} not applied: this Lite runtime has no"
                                    " MobileConfig.set_power_mode (ARM builds only)")
        if "threads" not in applied:
            receipt.evidence.append(f"threads={self.threads} via OMP/MKL_NUM_THREADS of the worker process")
        receipt.evidence.extend(self.notes)
        return receipt

    def _clone(self) -> "LitePredictor":
        return LitePredictor(self.nb_path, self._requested, **self._args)

    def close(self) -> None:
        self.worker.close()

    def benchmark(self, inputs: Sequence[np.ndarray], runs: int = 10) -> float:
        """Median wall seconds of ``runs`` runs on ``inputs`` (warm-up run excluded)."""
        return _median_seconds(self, inputs, runs)


def _median_seconds(predictor: Predictor, inputs: Sequence[np.ndarray], runs: int) -> float:
    predictor.run(*inputs)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predictor.run(*inputs)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def example_inputs(specs: Sequence[TensorSpec], metadata: dict | None = None, seed: int = 0) -> list[np.ndarray]:
    """Inputs matching ``specs`` for timing: dynamic dims from the model's metadata (zoo example shapes)
    or 1; floats ~N(0,1), integers 0 (a valid token id / index)."""
    examples = {i.get("name"): i.get("example_shape") for i in (metadata or {}).get("inputs", [])}
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        example = examples.get(spec.name) or spec.shape
        shape = tuple(1 if (d is None or d < 0) else int(d) for d in example)
        dtype = np.dtype(spec.dtype or "float32")
        arrays.append(rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype))
    return arrays


def pick_faster(candidates: Sequence[Predictor], inputs: Sequence[np.ndarray], runs: int = 5
                ) -> tuple[Predictor, dict[str, float]]:
    """Time each candidate on ``inputs`` (median of ``runs``), keep the fastest, close the others.

    Used on ARM hosts, where Paddle Lite and Paddle Inference both run the model and either may win.
    Returns the winner and ``{backend: median seconds}``.
    """
    if not candidates:
        raise ValueError("pick_faster needs at least one predictor")
    timings: dict[str, float] = {}
    for predictor in candidates:
        timings[getattr(predictor, "backend", type(predictor).__name__)] = _median_seconds(predictor, inputs, runs)
    winner = min(candidates, key=lambda p: timings[getattr(p, "backend", type(p).__name__)])
    for predictor in candidates:
        if predictor is not winner:
            predictor.close()
    return winner, timings
