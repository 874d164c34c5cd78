"""The zoo models Paddle.js can express, in Chromium, against the CPU reference (fp32).

transformer_encoder and gru_text take int64 tokens: the predictor looks them up in the embedding table on the
host and feeds the page their rows (a sequence length is needed: input_shape); gru_text's GRU is unrolled over
that length.
mobilenet_v2 and resnet18 are large for a software renderer (seconds per image
with SwiftShader) but run here all the same.
"""

import numpy as np
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


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", ["transformer_encoder", "gru_text"])
def test_token_models_run_with_their_ids_looked_up_on_the_host(webgl_ready, name, batch):
    """The page is fed the ids' embedding rows (24 steps), looked up on the host; gru_text's GRU is unrolled on
    the page, step by step."""
    from hwdeploy.errors import FallbackError, InputError

    z = zoo.get(name)
    tokens = z.sample_inputs(batch=batch, seed=5, seq_len=24)
    ref = cpu_reference(z.model, *tokens)[0]
    with hwdeploy.predictor(z.model, device="webgl", allow_software_renderer=True, fallback="allow",
                            input_shape=[1, 24], timeout=900) as p:
        assert p.inputs[0].dtype == "int64" and p.inputs[0].value_range == (0, zoo.VOCAB)
        out = p.run(*tokens)[0]
        assert out.shape == ref.shape
        assert_parity(out, ref)
        receipt = p.receipt()
        with pytest.raises(InputError, match="outside"):
            p.run(np.full((1, 24), zoo.VOCAB, np.int64))
    assert [(op.op, op.device) for op in receipt.ops if op.device != "webgl:0"] == [("pd_op.embedding", "cpu:0")]
    if name == "gru_text":
        assert {"matmul_v2", "tanh", "elementwise_mul"} <= {op.op for op in receipt.ops}
    if batch == 1:
        with pytest.raises(FallbackError, match=r"pd_op.embedding \(host: the integer ids"):
            hwdeploy.predictor(z.model, device="webgl", allow_software_renderer=True, input_shape=[1, 24])


def test_the_coverage_matrix_gives_webgl_the_sample_s_sequence_length():
    """hwdeploy conformance coverage: a backend declaring input_shape gets the sample's shape for a model with a
    dynamic sequence length, and only then."""
    from hwdeploy_conformance.coverage import static_shape_options

    tokens = zoo.get("transformer_encoder")
    sample = tokens.sample_inputs(batch=1)
    assert static_shape_options(tokens.model, {"plugin": "webgl"}, sample) == {"input_shape": [1, 32]}
    assert static_shape_options(tokens.model, {"plugin": "onnxruntime"}, sample) == {}
    mlp = zoo.get("mlp")
    assert static_shape_options(mlp.model, {"plugin": "webgl"}, mlp.sample_inputs(batch=1)) == {}
