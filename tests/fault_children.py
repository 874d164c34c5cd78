"""Child-process stand-ins for the safety net's tests: a load that dies by a signal, one that hangs."""

from __future__ import annotations

import os
import signal
import time


def segv_at_load(program, params, onednn, ir_optim, stage_file):
    with open(stage_file, "w") as fh:
        fh.write("load")
    os.kill(os.getpid(), signal.SIGSEGV)


def abort_at_run(program, params, onednn, ir_optim, stage_file):
    with open(stage_file, "w") as fh:
        fh.write("run")
    os.abort()


def hang_at_load(program, params, onednn, ir_optim, stage_file):
    with open(stage_file, "w") as fh:
        fh.write("load")
    time.sleep(600)
