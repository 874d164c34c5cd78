"""Fault 2: outputs drift by 1e-3 relative (a deterministic, plausible-looking error).

Also provides a utilisation sampler for its (host) device that shows it busy:
the control proving that the utilisation check does not raise false alarms.
"""

import numpy as np

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultdrift"


def drift(outputs, relative=1e-3):
    out = []
    for o in outputs:
        sign = np.where(np.arange(o.size) % 2 == 0, 1.0, -1.0).reshape(o.shape)
        out.append((o * (1 + relative * sign)).astype(o.dtype))
    return out


class DriftPredictor(kit.WrappedPredictor):
    def compute(self, inputs):
        return drift(super().compute(inputs))


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device with 1e-3 relative output drift")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return DriftPredictor(model, device, options)


@hookimpl
def hwdeploy_utilization_sampler(device):
    if device.kind == KIND:
        return kit.ActivitySampler(KIND)
