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

# tiny_segmenter: run-time-size bilinear resizes (folded: the sizes come from static shapes), channel max/min;
# lcnet_small: squeeze-and-excitation, hardswish, 5x5 depthwise; shufflenet_small: split and 5-D transposes;
# ocr_detector: nearest 2x..8x upsampling, transposed convs; ocr_recognizer: 2x1 pools, self-attention;
# tiny_detector_raw: arange/meshgrid folded, distribution-focal decoding (a matmul with a 1-D operand).
BATCH = {"mlp": 3, "unet_small": 1, "mobilenet_v2": 1, "resnet18": 1, "tiny_segmenter": 1, "lcnet_small": 1,
         "shufflenet_small": 1, "ocr_detector": 1, "ocr_recognizer": 1, "tiny_detector_raw": 2}


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
    assert size["within_guidance"] == (name not in ("mobilenet_v2", "resnet18"))
