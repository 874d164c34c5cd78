"""Fault 3c: hangs at run (waits for a device completion event that never comes)."""

import threading

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faulthang"


class HangPredictor(kit.WrappedPredictor):
    def compute(self, inputs):
        completion = threading.Event()
        completion.wait()  # the device never signals completion
        return super().compute(inputs)


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device that hangs at run")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return HangPredictor(model, device, options)
