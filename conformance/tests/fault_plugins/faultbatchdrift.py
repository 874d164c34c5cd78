"""Fault 2b: exact at batch 1, 1e-3 relative drift at batch sizes > 1 (a batching bug)."""

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit
from hwdeploy_test_faultdrift import drift

KIND = "faultbatchdrift"


class BatchDriftPredictor(kit.WrappedPredictor):
    def compute(self, inputs):
        outputs = super().compute(inputs)
        return drift(outputs) if inputs[0].shape[0] > 1 else outputs


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device that drifts on batch > 1")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return BatchDriftPredictor(model, device, options)
