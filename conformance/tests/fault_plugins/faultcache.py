"""Fault 11: results cached by input.

Right answers, computed once per distinct input and then looked up by the input's bytes: a timed loop that
repeats one input measures the lookup, not the device (what MLPerf's TEST04 exists to catch).
"""

import hashlib

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultcache"


class CachingPredictor(kit.WrappedPredictor):
    def reset(self):
        self.cache = {}

    def compute(self, inputs):
        key = hashlib.sha1(b"".join(a.tobytes() + str(a.shape).encode() for a in inputs)).digest()
        if key not in self.cache:
            self.cache[key] = super().compute(inputs)
        return [o.copy() for o in self.cache[key]]


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device that caches results by input")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return CachingPredictor(model, device, options)
