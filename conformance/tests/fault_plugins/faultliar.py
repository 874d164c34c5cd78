"""Fault 1b: a device whose plugin claims execution on the device while the work runs on the host CPU.

Its receipt says ``faultliar:0`` (the runtime cannot tell), so only the
evidence outside the receipt catches it: the utilisation sampler (when
FAULTLIAR_SAMPLER=1, it samples the device, which stays idle) or, without a
sampler, the timing signature against the CPU reference.

FAULTLIAR_CLAIM_OPS=1: the receipt also claims complete per-op placement on the
device (``ops_known``, every op of the program on ``faultliar:0``). A claim is
the plugin's word: it must not switch the timing signature off.

Without FAULTLIAR_SAMPLER=1 the sampler hook says its tool is missing the
documented way (``BackendError`` with the reason), so the suite reports
"sampler unavailable: ..." rather than "no sampler hook".
"""

import os

from hwdeploy import Device, hookimpl
from hwdeploy.contract.receipt import OpPlacement
from hwdeploy.errors import BackendError

import hwdeploy_test_faultkit as kit

KIND = "faultliar"


class LiarPredictor(kit.WrappedPredictor):
    def compute(self, inputs):
        return self.inner._run(inputs)  # on the host CPU: the device's activity counter never moves

    def _receipt(self):
        receipt = self.inner._receipt()
        if os.environ.get("FAULTLIAR_CLAIM_OPS") == "1":
            from hwdeploy.sdk import paddle_format

            ops = sorted(set(paddle_format.load_pir_program(self.model.program).op_types()))
            receipt.ops = [OpPlacement(op, self.device.id) for op in ops]
            receipt.ops_known = True
            receipt.evidence.append("faultliar: every op placed on the device (the plugin's claim)")
        return receipt


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
    if device.kind != KIND:
        return None
    if os.environ.get("FAULTLIAR_SAMPLER") == "1":
        return kit.ActivitySampler(KIND)
    raise BackendError("liar-smi not found on PATH (set FAULTLIAR_SAMPLER=1 to simulate it)")
