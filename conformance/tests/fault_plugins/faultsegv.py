"""Fault 3b: segfaults on every run (a null pointer read in "the driver")."""

import ctypes

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultsegv"


class SegvPredictor(kit.WrappedPredictor):
    def compute(self, inputs):
        ctypes.string_at(0)  # SIGSEGV
        return super().compute(inputs)


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device that segfaults at run")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return SegvPredictor(model, device, options)
