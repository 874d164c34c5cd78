"""Per-op placement on a CustomDevice: where each kernel of Paddle's kernel program ran, and why not on the device.

The kernel program (read with :mod:`hwdeploy.sdk.paddle_kernels`) says which
backend each kernel ran on; on a CustomDevice, one that ran on the host did so
for one of three reasons, told apart here with Paddle's registered-kernel
inventory and ``CUSTOM_DEVICE_BLACK_LIST``: the device has no such kernel, the
kernel was forced off by configuration, or Paddle carried the op to the CPU
because its input was already there. The receipt's "fallback reasons" come
from :func:`classify`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hwdeploy.contract.receipt import CARRIED_PLACEMENT, FORCED_OFF, NO_KERNEL, OpPlacement
from hwdeploy.sdk.paddle_kernels import HOST_BACKENDS, KernelRecord

#: Paddle's variable naming kernels that must not run on a custom device (comma-separated kernel names).
BLACK_LIST_ENV = "CUSTOM_DEVICE_BLACK_LIST"

# Ops of the kernel program that move or name data rather than compute.
_TRANSFER_KERNELS = {"memcpy_h2d", "memcpy_d2h", "memcpy"}
_PSEUDO_KERNELS = {"data", "feed", "fetch", "shadow_feed", "shadow_feed_tensors"}

_inventory: dict[str, list[tuple[str, str, str]]] | None = None
_KEY_ENTRY = re.compile(r"^\((?P<backend>[^,]+), (?P<layout>.*), (?P<dtype>[^,]+)\)$")


def kernel_inventory() -> dict[str, list[tuple[str, str, str]]]:
    """Paddle's registered phi kernels in this process: name -> [(backend, layout, dtype)].

    Read from ``paddle.base.core._get_registered_phi_kernels`` (private; pinned
    and tested per Paddle version). Plugins' kernels are registered when Paddle
    is imported, so this never changes afterwards and is read once.
    """
    global _inventory
    if _inventory is None:
        from paddle.base import core

        table: dict[str, list[tuple[str, str, str]]] = {}
        for name, keys in core._get_registered_phi_kernels("function").items():
            parsed = []
            for key in keys:
                m = _KEY_ENTRY.match(key.strip())
                if m:
                    parsed.append((m["backend"].strip(), m["layout"].strip(), m["dtype"].strip()))
            table[name] = parsed
        _inventory = table
    return _inventory


def device_kernels(device_type: str, inventory: dict[str, list[tuple[str, str, str]]] | None = None) -> dict[str, set[str]]:
    """Kernels the device type has: name -> dtypes, its own plus Paddle's generic ``CUSTOM`` ones."""
    inventory = kernel_inventory() if inventory is None else inventory
    out: dict[str, set[str]] = {}
    for name, keys in inventory.items():
        dtypes = {dtype for backend, _layout, dtype in keys if backend in (device_type, "CUSTOM")}
        if dtypes:
            out[name] = dtypes
    return out


def black_list() -> set[str]:
    """Kernel names ``CUSTOM_DEVICE_BLACK_LIST`` keeps off custom devices."""
    return {name.strip() for name in os.environ.get(BLACK_LIST_ENV, "").split(",") if name.strip()}


@dataclass
class Placement:
    """Where each kernel of a model's program runs, with the reason for every one off the device."""

    device_id: str  # the device asked for, e.g. "npu:0"
    ops: list[OpPlacement] = field(default_factory=list)
    transfers: dict[str, int] = field(default_factory=dict)  # memcpy_h2d/d2h per run
    evidence: list[str] = field(default_factory=list)
    known: bool = True

    @property
    def on_device(self) -> int:
        return sum(op.count for op in self.ops if op.device == self.device_id)

    @property
    def actual(self) -> str:
        """The device the program really uses: the requested one if any kernel runs there, else the CPU."""
        if not self.known or self.on_device or not self.ops:
            return self.device_id
        return "cpu:0"

    def off_device(self) -> dict[str, int]:
        """Kernel name -> count, for kernels that run on the host."""
        counts: Counter[str] = Counter()
        for op in self.ops:
            if op.device != self.device_id:
                counts[op.op] += op.count
        return dict(counts)

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "ops": [op.__dict__ for op in self.ops], "transfers": self.transfers,
                "evidence": self.evidence, "known": self.known}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Placement":
        return cls(data["device_id"], [OpPlacement(**op) for op in data["ops"]], dict(data["transfers"]),
                   list(data["evidence"]), bool(data["known"]))


def classify(records: list[KernelRecord], device_type: str, device_id: str,
             kernels: dict[str, set[str]], blocked: set[str]) -> Placement:
    """Turn the kernel program into per-op placement, labelling each host op with why it is there.

    - :data:`FORCED_OFF`: ``CUSTOM_DEVICE_BLACK_LIST`` names the kernel;
    - :data:`NO_KERNEL`: the device registers no kernel of that name and dtype;
    - :data:`CARRIED_PLACEMENT`: it does, but Paddle placed the op on the CPU
      because its input was already there (PIR picks the backend from the
      input's place: one op without a kernel drags its successors along).
    """
    counts: Counter[tuple[str, str, str]] = Counter()
    transfers: Counter[str] = Counter()
    for record in records:
        if record.kernel in _PSEUDO_KERNELS or record.op.startswith("builtin."):
            continue
        if record.kernel in _TRANSFER_KERNELS:
            transfers[record.kernel] += 1
            continue
        backend = record.backend
        if backend == device_type or backend == "CUSTOM":
            counts[(record.kernel, device_id, "")] += 1
        elif backend in HOST_BACKENDS:
            if record.kernel in blocked:
                reason = FORCED_OFF
            elif record.dtype not in kernels.get(record.kernel, ()):
                reason = NO_KERNEL
            else:
                reason = CARRIED_PLACEMENT
            counts[(record.kernel, "cpu:0", reason)] += 1
        else:  # another backend (GPU...) or Undefined: not the device
            counts[(record.kernel, backend.lower(), f"kernel backend {backend}")] += 1
    ops = [OpPlacement(op, dev, n, reason) for (op, dev, reason), n in sorted(counts.items())]
    placement = Placement(device_id, ops, dict(sorted(transfers.items())))
    host = placement.off_device()
    placement.evidence.append(
        f"Paddle kernel program (pir_interpreter, first run): {placement.on_device} kernel(s) on {device_id}"
        f" ({device_type} backend), {sum(host.values())} on the host"
        + (": " + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(host.items())) if host else ""))
    if transfers:
        placement.evidence.append("host<->device copies per run: "
                                  + ", ".join(f"{k} x{n}" for k, n in sorted(transfers.items())))
    if blocked:
        placement.evidence.append(f"{BLACK_LIST_ENV}={','.join(sorted(blocked))}")
    return placement
