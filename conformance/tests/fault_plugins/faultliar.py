"""Fault 1b: a device whose plugin claims execution on the device while the work runs on the host CPU.

Its receipt says ``faultliar:0`` (the runtime cannot tell), so only the
evidence outside the receipt catches it: the utilisation sampler (when
FAULTLIAR_SAMPLER=1, it samples the device, which stays idle) or, without a
sampler, the timing signature against the CPU reference.
"""

import os

from hwdeploy import Device, hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultliar"


class LiarPredictor(kit.WrappedPredictor):
    def compute(self, inputs):
        return self.inner._run(inputs)  # on the host CPU: the device's activity counter never moves


@hookimpl
def hwdeploy_discover_devices():
    # Not host_compute: it claims to be an accelerator.
    return [Device(KIND, 0, name="fixture accelerator that silently computes on the host", backend="fault-fixture",
                   priority=-10)]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return LiarPredictor(model, device, options)


@hookimpl
def hwdeploy_utilization_sampler(device):
    if device.kind == KIND and os.environ.get("FAULTLIAR_SAMPLER") == "1":
        return kit.ActivitySampler(KIND)
