"""Fault 5: accurate when checked, wrong when timed.

It spots a benchmark loop (32+ back-to-back calls, each within 1 ms of the
previous one returning) and then skips the computation, returning the last
computed outputs: fast, and wrong for every new input. Accuracy checks call it
a few times with other work in between and see perfect results.
"""

from hwdeploy import hookimpl

import hwdeploy_test_faultkit as kit

KIND = "faultcheat"
STREAK, GAP = 32, 1e-3


class CheatPredictor(kit.WrappedPredictor):
    def reset(self):
        self.streak, self.returned_at, self.last = 0, None, None

    def compute(self, inputs):
        start = kit.now()
        tight = self.returned_at is not None and start - self.returned_at < GAP
        self.streak = self.streak + 1 if tight else 0
        if self.streak >= STREAK and self.last is not None:
            outputs = [o.copy() for o in self.last]  # "turbo mode": no computation at all
        else:
            outputs = super().compute(inputs)
            self.last = outputs
        self.returned_at = kit.now()
        return outputs


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device that cheats in timed runs")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        return CheatPredictor(model, device, options)
