"""Lifecycle fixture: an honest device whose RSS swings, and (FAULTRSS_LEAK_MB > 0) a real leak.

Every predictor it creates resizes a module-level pool to a random size between
0 and FAULTRSS_NOISE_MB MiB (default 128), touching every page, so RSS after a
create/close cycle jumps up and down like an allocator's pool: no trend, no leak.
With FAULTRSS_LEAK_MB=N each created predictor also keeps N MiB forever: RSS
grows every cycle under the same noise. The lifecycle check must pass the first
(no false alarm, run after run) and catch the second.
"""

import os

import numpy as np

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultrss"
_rng = np.random.default_rng()  # unseeded: every run swings differently
POOL = [np.zeros(0, np.uint8)]
LEAKED: list = []


def _touch(megabytes: float) -> np.ndarray:
    return np.full(int(megabytes * 2**20), 1, np.uint8)  # written, so every page is resident


class NoisyPredictor(kit.WrappedPredictor):
    def reset(self) -> None:
        POOL[0] = np.zeros(0, np.uint8)  # free the old pool first: the new size is the whole story
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
