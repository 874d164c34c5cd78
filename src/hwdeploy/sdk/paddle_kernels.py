"""Which kernel ran each op: Paddle's own *kernel program*, captured and parsed.

Paddle Inference lowers a PIR program to a kernel program on the first
``run()``: every op becomes one phi kernel with a kernel key (backend, layout,
dtype), and the backend is where that op really executes (``CPU``/``ONEDNN``
on the host, a device type such as ``gpu`` or a CustomDevice's own type, or
``CUSTOM`` for Paddle's generic kernels on any CustomDevice). The PIR
interpreter prints that program at ``VLOG(2)`` of its ``pir_interpreter``
module, from C++, to file descriptor 2. This module turns the dump on for a
block, captures fds 1/2 meanwhile and parses the text into
:class:`KernelRecord`\\ s, so a plugin can put truthful per-op placement in its
receipt::

    from hwdeploy.sdk import paddle_inference as pi, paddle_kernels

    predictor = pi.PaddleInferencePredictor(model, device, pi.make_config(model))
    with paddle_kernels.capture_kernel_program() as dump:
        predictor.run(*inputs)  # the first run builds (and prints) the kernel program
    dump.records  # [KernelRecord(op="pd_op.matmul", kernel="matmul", backend="CPU", dtype="float32"), ...]

glog binds each ``VLOG`` site to a module's level the first time that site
runs, so the dump can only be switched on later if ``pir_interpreter`` was
registered *before* Paddle's interpreter first ran:
:func:`hwdeploy.sdk.paddle_inference.inference_module` calls
:func:`register_dump_site` right after importing Paddle. In a process whose
Paddle ran before that, :attr:`KernelProgramCapture.records` is None (nothing
was printed); read the program in a fresh process instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Iterator

#: The glog module whose ``VLOG(2)`` prints the kernel program.
VLOG_MODULE = "pir_interpreter"
#: The first line of the dump, on every Paddle build (CPU, GPU, CustomDevice).
BANNER = "The network executed by pir interpreter"
#: Kernel-key backends that mean "the host CPU".
HOST_BACKENDS = frozenset({"CPU", "ONEDNN"})

# Kernel ops print as "relu_(phi_kernel)" / "name(legacy_kernel)", oneDNN ones as "onednn_kernel.phi_kernel";
# the kernel's own name is then only in the kernel_name attribute.
_KERNEL_LINE = re.compile(r'"(?:(?P<name>[\w.]+)\((?:phi_kernel|legacy_kernel)\)'
                          r'|(?P<dialect>\w+_kernel)\.(?:phi_kernel|legacy_kernel))"')
_KEY = re.compile(r"kernel_key:<backend:(?P<backend>\w+)\|layout:[^|>]*\|dtype:(?P<dtype>\w+)>")
_ATTR_STR = r'{}:"(?P<value>[\w.]+)"'


@dataclass(frozen=True)
class KernelRecord:
    """One kernel of Paddle's kernel program: op, phi kernel name, kernel-key backend and dtype."""

    op: str  # "pd_op.relu_"
    kernel: str  # "relu"
    backend: str  # "CPU", "ONEDNN", "gpu", a CustomDevice type ("npu"), "CUSTOM", "Undefined"
    dtype: str  # "float32"

    @property
    def on_host(self) -> bool:
        return self.backend in HOST_BACKENDS


def parse_kernel_program(text: str) -> list[KernelRecord] | None:
    """The kernels in a kernel-program dump, in program order; None if ``text`` holds no dump at all.

    Lines that are not kernels (``builtin.parameter``, ``builtin.shadow_output``...) are skipped; a dump
    whose program has no kernel gives ``[]``.
    """
    if BANNER not in text:
        return None
    records = []
    for line in text.splitlines():
        match = _KERNEL_LINE.search(line)
        if not match:
            continue
        key = _KEY.search(line)
        kernel = re.search(_ATTR_STR.format("kernel_name"), line)
        op = re.search(_ATTR_STR.format("op_name"), line)
        name = match["name"] or (kernel["value"] if kernel else match["dialect"])
        records.append(KernelRecord(op=op["value"] if op else name,
                                    kernel=kernel["value"] if kernel else name.rstrip("_"),
                                    backend=key["backend"] if key else "Undefined",
                                    dtype=key["dtype"] if key else ""))
    return records


# ---------------------------------------------------------------------------------------------- the dump switch

_site_registered = False


def register_dump_site() -> None:
    """Register ``pir_interpreter`` with glog at level 0 (quiet), so :func:`kernel_program_dump` works later.

    Called by :func:`hwdeploy.sdk.paddle_inference.inference_module` right after importing Paddle; call it
    yourself only if you import Paddle another way. Idempotent.
    """
    global _site_registered
    if not _site_registered:
        from paddle.base import core

        core.set_vlog_level({VLOG_MODULE: 0})
        _site_registered = True


@contextlib.contextmanager
def kernel_program_dump() -> Iterator[None]:
    """Turn on the PIR interpreter's kernel-program dump (``VLOG(2)``) for the duration.

    Uses ``core.set_vlog_level`` (the ``GLOG_vmodule`` variable makes Paddle
    3.3.1 hang at exit). Paddle prints to fd 2: capture it with
    :func:`capture_native_output`, or use :func:`capture_kernel_program`.
    """
    from paddle.base import core

    core.set_vlog_level({VLOG_MODULE: 2})
    try:
        yield
    finally:
        core.set_vlog_level({VLOG_MODULE: 0})


# ---------------------------------------------------------------------------------------------- capture

#: fds 1 and 2 belong to the whole process: one capture at a time (re-entrant, so a caller may hold it
#: across several captures, e.g. predictor creation and its first run).
capture_lock = threading.RLock()
_GLOG_PROBLEM = re.compile(r"^[WEF]\d{4} ")


@contextlib.contextmanager
def capture_native_output(sink: list[str]) -> Iterator[None]:
    """Capture the process's fd 1 and fd 2 (C++ output, which ``sys.stderr`` never sees) into ``sink``.

    The captured text is appended to ``sink`` on exit. glog warnings and errors
    seen meanwhile are written back to stderr, so nothing the user should see
    is swallowed. Hold :data:`capture_lock` around it when threads may capture.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            sink.append(text)
            problems = [line for line in text.splitlines() if _GLOG_PROBLEM.match(line)]
            if problems:
                sys.stderr.write("\n".join(problems) + "\n")


@dataclass
class KernelProgramCapture:
    """What :func:`capture_kernel_program` saw: the raw output and the kernels parsed from it."""

    text: str = ""
    records: list[KernelRecord] | None = None  # None: Paddle printed no kernel program
    _sink: list[str] = field(default_factory=list, repr=False)


@contextlib.contextmanager
def capture_kernel_program() -> Iterator[KernelProgramCapture]:
    """Dump and capture the kernel program of whatever Paddle builds in the block; parsed on exit.

    Paddle prints the program when it builds it: on a predictor's first
    ``run()`` (and, for constant folding, sometimes during ``create_predictor``);
    later runs print nothing.
    """
    capture = KernelProgramCapture()
    with capture_lock:
        try:
            with kernel_program_dump(), capture_native_output(capture._sink):
                yield capture
        finally:
            capture.text = "".join(capture._sink)
            capture.records = parse_kernel_program(capture.text)


__all__ = ["BANNER", "HOST_BACKENDS", "KernelProgramCapture", "KernelRecord", "VLOG_MODULE", "capture_kernel_program",
           "capture_lock", "capture_native_output", "kernel_program_dump", "parse_kernel_program",
           "register_dump_site"]
