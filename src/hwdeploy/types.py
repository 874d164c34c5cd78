"""Small typed records plugins return from hooks (besides Device, Predictor, Receipt)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol


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
