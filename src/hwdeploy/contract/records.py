"""The typed records plugins return from hooks: devices, conversion targets, artifacts, CLI commands, samplers."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from hwdeploy.errors import DeviceStringError

# "auto", "auto:fastest", "cpu", "gpu", "gpu:1", "npu:0", vendor kinds like "xpu:3".
_DEVICE_RE = re.compile(r"^(?P<kind>[a-z][a-z0-9_]{0,31})(?::(?P<index>[^:]*))?$")
AUTO_MODES = ("fastest",)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``-1`` for a dynamic dimension) and numpy dtype name of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    #: For integer inputs that index something (token ids into an embedding): the valid values, [low, high).
    #: Read from the program; an id outside it would read out of bounds in the runtime.
    value_range: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.value_range is not None:
            data["value_range"] = list(self.value_range)
        return data


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string: ``kind`` plus an optional ``index``.

    ``DeviceSpec.parse("gpu:1") == DeviceSpec("gpu", 1)``; ``"gpu"`` leaves the
    index open (the first available one is used). ``auto`` may carry a mode:
    ``auto:fastest``.
    """

    kind: str
    index: int | None = None
    mode: str | None = None

    @classmethod
    def parse(cls, text: "str | DeviceSpec") -> "DeviceSpec":
        if isinstance(text, DeviceSpec):
            return text
        if not isinstance(text, str):
            raise DeviceStringError(f"device must be a string like 'cpu' or 'npu:0', got {type(text).__name__}")
        raw = text
        text = text.strip().lower()
        match = _DEVICE_RE.match(text)
        if not match:
            raise DeviceStringError(
                f"malformed device string {raw!r}: expected KIND or KIND:INDEX, e.g. 'cpu', 'gpu:1', 'npu:0', 'auto'"
            )
        kind, index = match["kind"], match["index"]
        if kind == "auto":
            if index is None:
                return cls("auto")
            if index in AUTO_MODES:
                return cls("auto", mode=index)
            raise DeviceStringError(f"unknown auto mode {index!r} in device string {raw!r}; known: {', '.join(AUTO_MODES)}")
        if index is None:
            return cls(kind)
        if not (index.isascii() and index.isdigit()) or len(index) > 6:  # "²".isdigit() is True
            raise DeviceStringError(f"malformed device index in {raw!r}: expected a non-negative integer, e.g. '{kind}:0'")
        return cls(kind, int(index))

    def __str__(self) -> str:
        if self.mode:
            return f"{self.kind}:{self.mode}"
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    def matches(self, device: "Device") -> bool:
        return device.kind == self.kind and (self.index is None or device.index == self.index)


@dataclass
class Device:
    """One device a plugin can run models on, or a kind it knows is absent.

    Plugins return these from ``hwdeploy_discover_devices``. A device that
    cannot be used right now is still reported, with ``available=False`` and a
    ``reason`` that says why and how to fix it: that is what ``hwdeploy devices``
    shows an integrator.
    """

    kind: str
    index: int = 0
    name: str = ""
    backend: str = ""
    available: bool = True
    reason: str = ""
    #: ``device="auto"`` takes the available device with the highest priority.
    #: Conventions: dedicated accelerators 100 (gpu) / 90 (npu, mlu), cpu 0,
    #: software-emulated or browser devices below 0 (never chosen by "auto").
    priority: int = 0
    memory_bytes: int | None = None
    #: True for the device whose results every parity check compares against (the built-in Paddle
    #: Inference CPU plugin sets it; ``auto:fastest`` and the conformance suite look for it).
    reference: bool = False
    #: True when the device's runtime computes on the host CPU by design (an emulator, a CPU backend):
    #: the conformance suite then does not expect a timing or utilisation signature of an accelerator.
    host_compute: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: Filled in by hwdeploy: the plugin that reported this device.
    plugin: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.index}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["id"] = self.id
        return data

    def fallback(self, actual: str = "cpu:0") -> "Device":
        """The device a runtime really uses when it was asked for this one (``"cpu:0"``), for a receipt.

        Named ``"cpu (fallback from gpu:0)"``; backend and plugin stay those of the requested device.
        """
        kind, _, index = actual.partition(":")
        return Device(kind, int(index or 0), name=f"{kind} (fallback from {self.id})", backend=self.backend,
                      plugin=self.plugin)

    def __str__(self) -> str:
        return self.id



@dataclass(frozen=True)
class ConversionTarget:
    """A conversion target a plugin offers (``hwdeploy convert --target NAME``)."""

    name: str
    description: str
    #: Device kinds whose predictors load this target's artifacts.
    device_kinds: tuple[str, ...] = ()


@dataclass
class Artifact:
    """What a conversion produced: files in ``directory`` plus facts about them.

    hwdeploy caches artifacts by model content hash + target + options: a
    plugin's ``hwdeploy_convert_model`` is only called on a cache miss, with an
    empty directory to fill.
    """

    target: str
    directory: Path
    files: list[str]  # names relative to ``directory``
    metadata: dict[str, Any] = field(default_factory=dict)
    cached: bool = False  # set by hwdeploy: True when served from the cache

    def path(self, name: str | None = None) -> Path:
        return self.directory / (name or self.files[0])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return data

    @classmethod
    def load(cls, directory: Path) -> "Artifact":
        data = json.loads((directory / "artifact.json").read_text())
        data["directory"] = directory
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self) -> None:
        data = self.to_dict()
        data.pop("directory")
        data.pop("cached")
        (self.directory / "artifact.json").write_text(json.dumps(data, indent=1, sort_keys=True))


@dataclass(frozen=True)
class CliCommand:
    """A ``hwdeploy`` subcommand contributed by a plugin (the conformance suite adds ``conformance``)."""

    name: str
    help: str
    configure_parser: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # returns the exit code


class UtilizationSampler(Protocol):
    """Samples a device's busy fraction while a workload runs (NVML, npu-smi, cnmon...)."""

    def start(self) -> None: ...

    def stop(self) -> dict[str, Any]:
        """Stop sampling; return at least ``{"samples": int, "mean_busy": float 0..1, "max_busy": float}``."""
