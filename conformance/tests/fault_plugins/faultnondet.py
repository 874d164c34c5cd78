"""Fault 4: nondeterministic outputs (random 1e-5 relative noise, like unordered atomic reductions).

Small enough to pass parity (1e-4), large enough to break the fp32 determinism bound (1e-6).
"""

import numpy as np

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultnondet"


class NondetPredictor(kit.WrappedPredictor):
    def reset(self):
        self.rng = np.random.default_rng()  # unseeded on purpose

    def compute(self, inputs):
        return [(o + 1e-5 * np.abs(o) * self.rng.standard_normal(o.shape)).astype(o.dtype)
                for o in super().compute(inputs)]


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device with nondeterministic outputs")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return NondetPredictor(model, device, options)
