"""The zoo models Paddle.js can express, in Chromium, against the CPU reference (fp32).

transformer_encoder and gru_text take int64 tokens through embeddings (and an
RNN): test_webgl_converter.py checks they are refused with those op names.
mobilenet_v2 and resnet18 are large for a software renderer (seconds per image
with SwiftShader) but run here all the same.
"""

import pytest

import hwdeploy
from hwdeploy import zoo
from webgl_testlib import assert_parity, cpu_reference

pytestmark = pytest.mark.slow

# tiny_segmenter: run-time-size bilinear resizes (folded: the sizes come from static shapes), channel max/min.
BATCH = {"mlp": 3, "unet_small": 1, "mobilenet_v2": 1, "resnet18": 1, "tiny_segmenter": 1}


@pytest.mark.parametrize("name", list(BATCH))
def test_zoo_parity(webgl_ready, name):
    z = zoo.get(name)
    inputs = z.sample_inputs(batch=BATCH[name], seed=5)
    ref = cpu_reference(z.model, *inputs)[0]
    with hwdeploy.predictor(z.model, device="webgl", allow_software_renderer=True, timeout=900) as p:
        out = p.run(*inputs)[0]
        receipt = p.receipt()
    assert_parity(out, ref)
    assert receipt.ops_known and all(op.device == "webgl:0" for op in receipt.ops)
    size = hwdeploy.convert(z.model, "webgl").metadata["size"]
    # mobilenet_v2 (14 MB) and resnet18 (47 MB) exceed Paddle.js' ~10 MB guidance: reported, not refused
    assert size["within_guidance"] == (name in ("mlp", "unet_small", "tiny_segmenter"))
