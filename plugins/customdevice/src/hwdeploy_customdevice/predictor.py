"""A Paddle Inference predictor on a CustomDevice whose receipt says where every op ran.

Creation does the work once, so ``run()`` pays nothing for it: check that
Paddle in this process has the device (else ``enable_custom_device`` would
abort it), build the config like the CPU reference plus
``enable_custom_device``, and do one warm-up run while capturing the kernel
program Paddle builds on that first run (:mod:`hwdeploy.sdk.paddle_kernels`),
classified per op by :mod:`.placement`. When this process ran Paddle's
interpreter before the dump could be enabled, the same program is read in a
fresh process instead.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwdeploy.contract.model import Model, TensorSpec
from hwdeploy.contract.receipt import OpPlacement, Receipt
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError
from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.sdk import paddle_kernels
from hwdeploy.sdk.isolation import run_probe

from hwdeploy.sdk.inputs import random_inputs

from hwdeploy_customdevice.discovery import ensure_registered
from hwdeploy_customdevice.placement import Placement, black_list, classify, device_kernels


def sample_inputs(specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Deterministic warm-up inputs for ``specs``: hwdeploy's one rule (:mod:`hwdeploy.sdk.inputs`), every dynamic
    dimension 1 — the warm-up only has to execute every op once to record where it ran."""
    return random_inputs(specs, batch=1, seed=0, other_dims=1)


class CustomDevicePredictor(pi.PaddleInferencePredictor):
    """A Paddle Inference predictor on a custom device, with per-op placement in its receipt.

    Create it with :func:`create_custom_device_predictor`.
    """

    placement: Placement
    device_type: str = ""

    def _receipt(self) -> Receipt:
        receipt = super()._receipt()
        placement = self.placement
        receipt.evidence.append(f"paddle.inference.Config.enable_custom_device({self.device_type!r},"
                                f" {self._requested_device.index})")
        receipt.evidence.extend(placement.evidence)
        if placement.known:
            receipt.ops = [OpPlacement(op.op, op.device, op.count, op.reason) for op in placement.ops]
            receipt.ops_known = True
            if placement.actual != placement.device_id:
                # Nothing ran on the device, so no op is "off" the actual device: say why each left it.
                why: Counter[tuple[str, str]] = Counter()
                for op in placement.ops:
                    why[(op.op, op.reason)] += op.count
                receipt.fallback_evidence.append(
                    f"no kernel ran on {placement.device_id}; on the host: "
                    + ", ".join(f"{name} ({reason})" + (f" x{n}" if n > 1 else "")
                                for (name, reason), n in sorted(why.items())))
        else:
            receipt.fallback_evidence.append(
                "per-op placement could not be read from Paddle's kernel program, so execution on "
                f"{self._requested_device.id} is unverified")
        return receipt


def create_custom_device_predictor(model: Model, device: Device, device_type: str, *, threads: int | None = None,
                                   ir_optim: bool = True, onednn: bool = False, optim_cache: bool = True,
                                   check_finite: bool = True, warmup_inputs: Sequence[np.ndarray] | None = None,
                                   options: dict[str, Any] | None = None,
                                   placement_fallback: bool = True) -> CustomDevicePredictor:
    """A Paddle Inference predictor on ``device_type:device.index`` whose receipt has per-op placement.

    Builds the config like the CPU reference (IR optimisation, optimized-program
    cache) plus ``enable_custom_device``; oneDNN is off by default (it only
    affects ops that fall back). Creates the predictor and does one warm-up run
    on ``warmup_inputs`` (default: :func:`sample_inputs` of the input specs)
    while capturing the kernel program Paddle builds on that first run. If
    this process ran Paddle's interpreter before hwdeploy could turn that dump
    on, the placement is read in a fresh process (``placement_fallback``).
    """
    ensure_registered(device_type, device.index)
    config = pi.make_config(model, threads=threads, ir_optim=ir_optim, onednn=onednn, optim_cache=optim_cache,
                            cache_tag=("custom_device", device_type, device.index))
    config.enable_custom_device(device_type, device.index)
    holder: dict[str, str] = {"actual": device.id}
    with paddle_kernels.capture_lock:  # creation and first run: nobody else's output in between
        with paddle_kernels.capture_kernel_program() as creation:
            paddle_predictor = pi.create_paddle_predictor(config)
        predictor = CustomDevicePredictor(model, device, config, paddle_predictor=paddle_predictor,
                                          actual_device=lambda _config: holder["actual"], options=options,
                                          check_finite=check_finite)
        predictor.device_type = device_type
        arrays = (predictor.prepare_inputs(list(warmup_inputs), {}) if warmup_inputs is not None
                  else sample_inputs(predictor.inputs))
        with paddle_kernels.capture_kernel_program() as first_run:
            try:
                predictor._run(arrays)
            except BackendError as exc:
                raise BackendError(f"warm-up run on {device.id} failed ({exc}); pass warmup_inputs=[...] with"
                                   " inputs the model accepts") from exc
    records = first_run.records
    source = "this process"
    if records is None and not placement_fallback:
        placement = Placement(device.id, known=False, evidence=["Paddle printed no kernel program"])
    elif records is None:
        # Paddle's interpreter ran before hwdeploy could enable the dump (glog binds each VLOG site once):
        # read the same program, same config, in a fresh process instead.
        placement = _placement_in_child(model, device, device_type, dict(threads=threads, ir_optim=ir_optim,
                                        onednn=onednn, optim_cache=optim_cache), arrays)
        source = "a fresh process (this one ran Paddle before the kernel-program dump could be enabled)"
    else:
        placement = classify(records, device_type, device.id, device_kernels(device_type), black_list())
    folded = creation.records or []
    if folded:
        host = sum(1 for r in folded if r.on_host)
        placement.evidence.append(f"{len(folded)} kernel(s) ran once while optimising the program (constant"
                                  f" folding), {host} of them on the host; not part of a run")
    placement.evidence.append(f"placement read in {source}")
    predictor.placement = placement
    holder["actual"] = placement.actual
    if placement.actual != device.id:
        predictor.device = device.fallback(placement.actual)
    return predictor


def _placement_in_child(model: Model, device: Device, device_type: str, config_kwargs: dict[str, Any],
                        arrays: list[np.ndarray]) -> Placement:
    with tempfile.TemporaryDirectory(prefix="hwdeploy-placement-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, *arrays)
        result = run_probe(f"{__name__}:_placement_probe",
                           [str(model.program), str(model.params) if model.params else None, model.format,
                            device_type, device.index, config_kwargs, str(inputs)], timeout=300)
    if not result.ok:
        return Placement(device.id, known=False, evidence=[f"kernel-program probe failed: {result.error}"])
    return Placement.from_dict(result.value)


def _placement_probe(program: str, params: str | None, fmt: str, device_type: str, index: int,
                     config_kwargs: dict[str, Any], inputs_path: str) -> dict[str, Any]:
    """(child process) Build the predictor like the parent and return the classified kernel program."""
    model = Model(Path(program), Path(params) if params else None, fmt)  # type: ignore[arg-type]
    with np.load(inputs_path) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    device = Device(device_type, index)
    predictor = create_custom_device_predictor(model, device, device_type, warmup_inputs=arrays,
                                               placement_fallback=False, **config_kwargs)
    placement = predictor.placement
    placement.evidence = [e for e in placement.evidence if not e.startswith("placement read in")]
    return placement.to_dict()
