"""Lifecycle fixture: an honest device whose RSS swings, and (FAULTRSS_LEAK_MB > 0) a real leak.

Every predictor it creates resizes a module-level pool to a random size between
0 and FAULTRSS_NOISE_MB MiB (default 128), touching every page, so RSS after a
create/close cycle jumps up and down like an allocator's pool: no trend, no leak.
With FAULTRSS_LEAK_MB=N each created predictor also keeps N MiB forever: RSS
grows every cycle under the same noise. The lifecycle check must pass the first
(no false alarm, run after run) and catch the second.

The pool is an anonymous mmap, unmapped when replaced, so RSS follows the pool's
size exactly. A numpy array from malloc would not: glibc raises its mmap threshold
after the first large free (up to 32 MiB), later small pools land on the heap and
stay resident, and the floor steps up once by tens of MiB mid-run. That step is
real growth, not a swing (a CI run saw it as 3.3 MiB/cycle), so it is not what
this fixture is for.
"""

import mmap
import os

import numpy as np

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultrss"
_rng = np.random.default_rng()  # unseeded: every run swings differently
POOL: list = [None]
LEAKED: list = []


def _touch(megabytes: float) -> mmap.mmap:
    pages = mmap.mmap(-1, max(int(megabytes * 2**20), 1))
    view = np.frombuffer(pages, np.uint8)
    view.fill(1)  # written, so every page is resident
    del view  # no export left: close() can unmap it
    return pages


class NoisyPredictor(kit.WrappedPredictor):
    def reset(self) -> None:
        if POOL[0] is not None:
            POOL[0].close()  # unmap the old pool first: the new size is the whole story
        POOL[0] = _touch(_rng.uniform(0, float(os.environ.get("FAULTRSS_NOISE_MB", "128"))))
        leak = float(os.environ.get("FAULTRSS_LEAK_MB", "0"))
        if leak > 0:
            LEAKED.append(_touch(leak))


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device whose RSS swings (and leaks with FAULTRSS_LEAK_MB)")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return NoisyPredictor(model, device, options)
