"""Reading Paddle Lite ``.nb`` (naive buffer) files and opt's reports, without Lite.

An optimised program records, for every op, the kernel opt picked as a string
``op/alias/TARGET/PRECISION/LAYOUT`` (``conv2d/def/2/1/1`` = conv2d on x86, fp32, NCHW). Those
strings tell which hardware a ``.nb`` needs: an ARM ``.nb`` on an x86 runtime "runs" and returns
uninitialised memory, and an NNAdapter ``.nb`` without its runtime returns empty tensors, so the
predictor refuses to load what the host cannot execute (:func:`check_runnable`).

NNAdapter targets (Ascend, Cambricon...) show up as ``subgraph`` kernels on target 18; the ops inside
each subgraph are listed by opt's visualisation (one ``Block_N.dot`` per sub-block), parsed by
:func:`dot_ops`. Ops left in the main block with a CPU kernel are the ones that fall back to the
host CPU.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hwdeploy.errors import BackendError

#: lite_api::TargetType values (paddle_place.h, Lite 2.13).
TARGETS = {0: "unk", 1: "host", 2: "x86", 3: "cuda", 4: "arm", 5: "opencl", 6: "any", 7: "fpga", 8: "npu",
           9: "xpu", 10: "bm", 11: "mlu", 12: "rknpu", 13: "apu", 14: "huawei_ascend_npu", 15: "imagination_nna",
           16: "intel_fpga", 17: "metal", 18: "nnadapter"}
#: Kernel targets any Lite CPU runtime executes.
PORTABLE_TARGETS = {"host", "any"}
#: Ops that only move data in and out of the program.
IO_OPS = {"feed", "fetch"}

_KERNEL_RE = re.compile(rb"([a-z][a-z0-9_]*)/([A-Za-z0-9_]+)/(\d{1,2})/(\d{1,2})/(\d{1,2})(?![0-9/])")
_DOT_OP_RE = re.compile(r'node_\d+\[label="([^"]+)" style="filled" fillcolor="yellow"\]')


class UnrunnableModelError(BackendError):
    """A ``.nb`` whose kernels this host's Lite runtime cannot execute; ``missing`` maps target -> kernels."""

    def __init__(self, message: str, missing: dict[str, int]):
        super().__init__(message)
        self.missing = missing


@dataclass
class NbInfo:
    """What a ``.nb`` file says about itself: Lite version and kernels per op and target."""

    path: Path
    version: str
    size: int
    kernels: Counter = field(default_factory=Counter)  # (op, target name) -> count

    @property
    def targets(self) -> Counter:
        """Kernel count per target name."""
        counts: Counter = Counter()
        for (_, target), n in self.kernels.items():
            counts[target] += n
        return counts

    @property
    def compute_targets(self) -> set[str]:
        """Targets of the kernels that do the work (not host/any glue)."""
        return {t for t in self.targets if t not in PORTABLE_TARGETS}

    @property
    def uses_nnadapter(self) -> bool:
        return "nnadapter" in self.targets

    def ops_on(self, targets: set[str]) -> Counter:
        """Op -> count for kernels on any of ``targets`` (io ops excluded)."""
        counts: Counter = Counter()
        for (op, target), n in self.kernels.items():
            if target in targets and op not in IO_OPS:
                counts[op] += n
        return counts

    def to_dict(self) -> dict:
        return {"path": str(self.path), "version": self.version, "size": self.size,
                "targets": dict(self.targets),
                "kernels": [{"op": op, "target": t, "count": n} for (op, t), n in sorted(self.kernels.items())]}


def read_nb(path: Path) -> NbInfo:
    """Parse ``path``'s header and kernel choices; ValueError if it is not a Lite naive buffer."""
    path = Path(path)
    data = path.read_bytes()
    # Header: uint16 meta version, then the Lite version string ("v2.13-rc"), NUL-terminated.
    if len(data) < 16 or not data[2:3] == b"v":
        raise ValueError(f"{path}: not a Paddle Lite .nb model (no version header)")
    version = data[2:data.index(b"\0", 2)].decode(errors="replace") if b"\0" in data[2:32] else "?"
    kernels: Counter = Counter()
    for match in _KERNEL_RE.finditer(data):
        target = TARGETS.get(int(match.group(3)), f"target{int(match.group(3))}")
        kernels[(match.group(1).decode(), target)] += 1
    if not kernels:
        raise ValueError(f"{path}: no kernel records found: not an optimised Paddle Lite model")
    return NbInfo(path, version, len(data), kernels)


def runnable_targets(machine: str, runtime: dict) -> set[str]:
    """Kernel targets a Lite runtime on ``machine`` can execute; ``runtime`` is the worker's hello."""
    targets = set(PORTABLE_TARGETS)
    arch = machine.lower()
    if arch in ("x86_64", "amd64", "i686", "x86"):
        targets.add("x86")
    if arch.startswith(("aarch64", "arm")):
        targets.add("arm")
    if runtime.get("nnadapter"):
        targets.add("nnadapter")
    if runtime.get("opencl"):
        targets.add("opencl")
    return targets


def check_runnable(info: NbInfo, machine: str, runtime: dict) -> None:
    """Raise :class:`UnrunnableModelError` unless this host's Lite runtime can execute every kernel of ``info``."""
    can = runnable_targets(machine, runtime)
    missing = {t: n for t, n in info.targets.items() if t not in can}
    if not missing:
        return
    kinds = ", ".join(f"{n} {t} kernel(s)" for t, n in sorted(missing.items()))
    hints = []
    if "arm" in missing:
        hints.append("ARM kernels need an ARM CPU (aarch64/armv7) host with Paddle Lite")
    if "x86" in missing:
        hints.append("x86 kernels need an x86-64 host")
    if "nnadapter" in missing:
        hints.append("NNAdapter subgraphs need a Lite runtime built with LITE_WITH_NNADAPTER=ON plus the vendor's"
                     " NNAdapter driver and SDK (the PyPI paddlelite wheel has neither)")
    if "opencl" in missing:
        hints.append("OpenCL kernels need a Lite build with OpenCL and a GPU driver")
    raise UnrunnableModelError(
        f"{info.path.name} cannot run on this host: it was optimised for {', '.join(sorted(info.compute_targets))}"
        f" ({kinds}), but this host is {machine} and its Paddle Lite runtime executes only"
        f" {', '.join(sorted(can - PORTABLE_TARGETS)) or 'host'} kernels. Running it anyway would return garbage"
        f" or empty tensors instead of an error. {'; '.join(hints)}. To run here, convert for the target this host"
        " has (e.g. `hwdeploy convert MODEL --target x86`).", missing)


def dot_ops(path: Path) -> Counter:
    """Op types (with counts) in one block graph written by opt's ``visualize_optimized_nb_model``."""
    return Counter(_DOT_OP_RE.findall(Path(path).read_text(errors="replace")))


def parse_model_ops_table(text: str) -> dict[str, dict[str, bool]]:
    """Parse opt's ``--print_model_ops`` table: op -> {target column: has a kernel}.

    The table looks like::

        OPs in the input model include:
                                        OP_name  huawei_ascend_npu  kARM  kHost
                                elementwise_add                  Y     Y
    """
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("OP_name"))
    except StopIteration:
        return {}
    header = lines[start]
    columns = [(m.group(0), m.end()) for m in re.finditer(r"\S+", header)][1:]
    names = [_column_name(c) for c, _ in columns]
    table: dict[str, dict[str, bool]] = {}
    for line in lines[start + 1:]:
        parts = line.split()
        if not parts or not re.fullmatch(r"[A-Za-z0-9_]+", parts[0]) or any(p != "Y" for p in parts[1:]):
            break
        marks = {name: False for name in names}
        for m in re.finditer(r"Y", line[line.index(parts[0]) + len(parts[0]):]):
            pos = m.end() + line.index(parts[0]) + len(parts[0])
            nearest = min(range(len(columns)), key=lambda i: abs(columns[i][1] - pos))
            marks[names[nearest]] = True
        table[parts[0]] = marks
    return table


def _column_name(column: str) -> str:
    """``kX86`` -> ``x86``, ``kARM`` -> ``arm``, ``kHost`` -> ``host``; NNAdapter devices keep their names."""
    if column.startswith("k") and column[1:2].isupper():
        return column[1:].lower()
    return column


def parse_unsupported(text: str) -> list[str]:
    """The ops opt's model check names as unsupported ("These unsupported ops are: 'a', 'b'.")."""
    match = re.search(r"unsupported ops are:\s*(.*)", text)
    return re.findall(r"'([^']+)'", match.group(1)) if match else []

