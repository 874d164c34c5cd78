"""The execution receipt: where a model really runs, as the backend itself reports it."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from hwdeploy.contract.records import DeviceSpec

RECEIPT_VERSION = 1

#: ``OpPlacement.reason`` values a plugin should use when an op left the device.
NO_KERNEL = "no kernel on the device"
CARRIED_PLACEMENT = "placement carried from a CPU input"
FORCED_OFF = "forced off the device by configuration"


@dataclass
class OpPlacement:
    """One op (kernel) of the executed program and the device it ran on."""

    op: str
    device: str  # a device id ("npu:0") or "cpu"
    count: int = 1
    reason: str = ""  # why it is not on the requested device, when it is not


@dataclass
class Receipt:
    """JSON-serialisable evidence of where a predictor runs.

    Plugins fill ``actual`` (the device the runtime really uses, as the runtime
    reports it, not as it was asked), ``ops`` where the runtime can tell per-op
    placement, and ``fallback_evidence`` for anything else that means "not on
    the device" (e.g. a software renderer standing in for a GPU). hwdeploy's fallback policy
    reads :meth:`fallback_reasons`.
    """

    requested: str  # what the caller asked for ("auto", "npu", "npu:0")
    actual: str  # the device id the runtime reports it really uses
    backend: str
    selected: str = ""  # the device hwdeploy chose for ``requested`` ("npu:0" for "auto" or "npu")
    plugin: str = ""
    plugin_version: str = ""
    hwdeploy_version: str = ""
    runtime_versions: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    ops: list[OpPlacement] = field(default_factory=list)
    ops_known: bool = False  # True when ``ops`` is the complete executed program
    fallback_evidence: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # other facts, e.g. "config.use_gpu() == True"
    policy: str = "error"
    auto_skipped: list[str] = field(default_factory=list)  # candidates "auto" passed over, and why
    #: How ``device="auto:fastest"`` chose: every candidate's median latency and parity, the cache key.
    selection: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    version: int = RECEIPT_VERSION

    def off_device_ops(self) -> list[OpPlacement]:
        """Ops that ran somewhere other than ``actual``."""
        return [op for op in self.ops if op.device != self.actual]

    def fallback_reasons(self) -> list[str]:
        """Why execution is not (only) on the requested device; empty when it is."""
        reasons = []
        target = self.selected or self.requested
        requested = DeviceSpec.parse(target)
        actual = DeviceSpec.parse(self.actual)
        if requested.kind != "auto" and (
            requested.kind != actual.kind or (requested.index is not None and requested.index != actual.index)
        ):
            reasons.append(f"requested {target} but the {self.backend} runtime runs on {self.actual}")
        off = self.off_device_ops()
        if off:
            counts = Counter()
            for op in off:
                counts[(op.op, op.device, op.reason)] += op.count
            listed = ", ".join(f"{name}" + (f" ({why})" if why else "") + (f" x{n}" if n > 1 else "")
                               for (name, _dev, why), n in sorted(counts.items()))
            reasons.append(f"{sum(counts.values())} op(s) ran off {self.actual}: {listed}")
        reasons.extend(self.fallback_evidence)
        return reasons

    @property
    def fell_back(self) -> bool:
        return bool(self.fallback_reasons())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fallback_reasons"] = self.fallback_reasons()
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Receipt":
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["ops"] = [OpPlacement(**op) for op in data.get("ops", [])]
        return cls(**data)
