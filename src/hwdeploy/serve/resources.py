"""Device kinds -> Ray resources: one replica (or Ray Data worker) holds one device.

- ``cpu`` (and ``auto``): ``num_cpus`` = the predictor's math threads (``threads`` option, default 1).
  ``auto`` cannot know the device before the replica runs, so it reserves CPUs only: name the kind
  to have Ray reserve the accelerator.
- ``gpu`` / ``gpu:N``: ``num_gpus=1``. Ray picks the GPU and makes it the only visible one, so inside
  the replica it is ``gpu:0``; the receipt endpoint shows both.
- ``npu``: Ray's built-in ``NPU`` accelerator resource (Ray sets the visible NPU the same way).
- any other kind (``mlu``, a third-party plugin's kind): a custom resource named after the kind, one
  unit per device. Start each node advertising what it has:
  ``ray start --resources '{"mlu": 4}'``.

Standard library only: no Ray import.
"""

from __future__ import annotations

from typing import Any

from hwdeploy.contract.records import DeviceSpec
from hwdeploy.errors import OptionError

#: Kinds Ray itself knows as accelerators (it sets the visible-devices variable for them).
RAY_ACCELERATORS = {"gpu": None, "npu": "NPU"}


def ray_resources(device: str, *, threads: int | None = None) -> dict[str, Any]:
    """The ``ray_actor_options`` (or ``map_batches`` arguments) that reserve one ``device``.

    >>> ray_resources("gpu:1")
    {'num_cpus': 1.0, 'num_gpus': 1}
    >>> ray_resources("mlu", threads=2)
    {'num_cpus': 2.0, 'resources': {'mlu': 1}}
    """
    spec = DeviceSpec.parse(device)
    if spec.mode:
        raise OptionError(f"device {device!r}: a serving replica needs a fixed device, not a selection mode")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise OptionError(f"threads must be a positive integer, got {threads!r}")
    options: dict[str, Any] = {"num_cpus": float(threads or 1)}
    if spec.kind in ("cpu", "auto"):
        return options
    if spec.kind == "gpu":
        options["num_gpus"] = 1
    else:
        options["resources"] = {RAY_ACCELERATORS.get(spec.kind) or spec.kind: 1}
    return options


def replica_device(device: str, accelerator_ids: dict[str, list[str]] | None) -> str:
    """The device string a replica opens: Ray's accelerators are renumbered from 0 inside the replica.

    ``accelerator_ids`` is ``ray.get_runtime_context().get_accelerator_ids()`` (``{"GPU": ["3"], ...}``).
    """
    spec = DeviceSpec.parse(device)
    if spec.kind in RAY_ACCELERATORS:
        ray_name = RAY_ACCELERATORS[spec.kind] or spec.kind.upper()
        if (accelerator_ids or {}).get(ray_name):
            return f"{spec.kind}:0"
    return device
