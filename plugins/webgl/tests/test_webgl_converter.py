"""The PIR -> Paddle.js converter, without a browser: model format, legalisation, errors, size report, cache."""

import json

import numpy as np
import pytest

import hwdeploy
from hwdeploy.errors import ConversionError, OptionError, UnsupportedOpsError
from hwdeploy_webgl import converter
from webgl_model_inputs import INPUTS


def _model_json(artifact) -> dict:
    return json.loads(artifact.path("model.json").read_text())


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_converted_model_is_well_formed(small_models, name):
    artifact = hwdeploy.convert(small_models[name], "webgl", refresh=True)
    model = _model_json(artifact)
    ops, variables = model["ops"], model["vars"]
    assert ops[0]["type"] == "feed" and ops[0]["outputs"]["Out"] == ["image"]
    assert ops[-1]["type"] == "fetch" and [o["type"] for o in ops].count("fetch") == 1
    # Paddle.js feeds one input, named image, with a feedShape matching its size
    assert variables["image"]["shape"] == artifact.metadata["input"]["shape"]
    fs = model["feedShape"]
    assert fs["fc"] * fs["fh"] * fs["fw"] == int(np.prod(variables["image"]["shape"]))
    for var in variables.values():
        assert 1 <= len(var["shape"]) <= 4, var  # no 0-d (Paddle.js reduces shapes without an initial value)
        assert not var["name"].isdigit()  # JS objects would reorder integer-like keys: weights would shift
    # Weights: one float32 run over the persistable vars in vars order
    persistable = [v for v in variables.values() if v["persistable"]]
    n_weights = sum(int(np.prod(v["shape"])) for v in persistable)
    data = b"".join(artifact.path(f"chunk_{i}.dat").read_bytes() for i in range(1, model["chunkNum"] + 1))
    assert len(data) == 4 * n_weights == artifact.metadata["size"]["weights_bytes"]
    # Every op input is produced earlier or is a weight; the output comes from the last op (the graph's sink)
    produced = {"image"} | {v["name"] for v in persistable}
    for op in ops[1:-1]:
        for names in op["inputs"].values():
            assert set(names) <= produced, (op, names)
        assert not all(n in {v["name"] for v in persistable} for names in op["inputs"].values() for n in names)
        produced |= set(op["outputs"]["Out"])
    readers = [op for op in ops if any(n in op["inputs"].get(k, []) for k in op["inputs"] for n in ["image"])]
    assert len(readers) == 1  # the input is uploaded for the first reader only
    assert ops[-2]["outputs"]["Out"] == ops[-1]["inputs"]["X"]
    assert artifact.metadata["converter_revision"] == converter.CONVERTER_REVISION


def test_legalisations_are_applied(small_models):
    model = _model_json(hwdeploy.convert(small_models["relu6_conv"], "webgl", refresh=True))
    fused = [op["attrs"]["fuse_opt"] for op in model["ops"] if "fuse_opt" in op["attrs"]]
    # Paddle 3's relu6 has no threshold attribute: without one the shader computes min(max(x, 0), undefined)
    assert {"relu6": {"threshold": 6.0}} in fused
    conv = next(op for op in model["ops"] if op["type"] == "conv2d")
    assert conv["attrs"]["fuse_relu"] is False and conv["attrs"]["padding_algorithm"] == "EXPLICIT"
    assert "Bias" in conv["inputs"]  # conv + bias add fused

    meta = hwdeploy.convert(small_models["matmul_softmax"], "webgl", refresh=True).metadata
    assert meta["passes"]["softmax shifted by its max"] == 3
    assert meta["passes"]["softmax axis moved last"] == 1
    meta = hwdeploy.convert(small_models["mobile_block"], "webgl", refresh=True).metadata
    assert meta["passes"]["conv + batch_norm folded"] == 2 and "batchnorm" not in meta["ops"]
    assert "pd_op.depthwise_conv2d" in meta["pir_ops"]
    meta = hwdeploy.convert(small_models["norms_pools"], "webgl", refresh=True).metadata
    assert meta["ops"]["batchnorm"] == 1  # not after a conv: the batchnorm shader
    assert meta["passes"]["global pooling -> explicit window"] == 2
    assert meta["passes"]["adaptive avg pooling -> matmul"] == 1


def test_every_unsupported_op_is_named(small_models):
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.convert(small_models["unsupported_mix"], "webgl", refresh=True)
    assert info.value.ops == ["pd_op.cumsum", "pd_op.erf", "pd_op.gelu", "pd_op.leaky_relu", "pd_op.maximum"]
    message = str(info.value)
    assert "erf" in message and "negative_slope 2.0 > 1" in message  # the reasons, not just the names


def test_an_unsupported_op_after_another_is_counted_too(small_models):
    """The second leaky_relu reads (through a conv) what the first one produced: both are listed."""
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.convert(small_models["refusal_chain"], "webgl", refresh=True)
    assert info.value.ops == ["pd_op.leaky_relu"]
    assert "pd_op.leaky_relu x2 (leaky_relu with negative_slope 2.0 > 1)" in str(info.value)


@pytest.mark.parametrize("shape, perm, merged, compact", [
    ((1, 2, 3, 5, 7), [0, 2, 1, 3, 4], (2, 3, 35), [1, 0, 2]),        # a channel shuffle at batch 1
    ((4, 2, 3, 5, 7), [0, 2, 1, 3, 4], (4, 2, 3, 35), [0, 2, 1, 3]),  # ... at batch 4
    ((2, 3, 4, 5, 6), [4, 3, 2, 1, 0], (2, 3, 4, 5, 6), [4, 3, 2, 1, 0]),  # nothing merges: still 5-D
    ((2, 3), [0, 1], (6,), [0]),                                      # identity: one block
])
def test_a_permutation_moves_the_same_blocks_on_merged_axes(shape, perm, merged, compact):
    got_merged, got_perm = converter.compact_permutation(shape, perm)
    assert (got_merged, got_perm) == (merged, compact)
    x = np.arange(int(np.prod(shape))).reshape(shape)
    expected = np.transpose(x, perm).reshape(-1)
    assert np.array_equal(np.transpose(x.reshape(got_merged), got_perm).reshape(-1), expected)


def test_a_converter_failure_names_the_op_and_keeps_its_cause(small_models, monkeypatch):
    def broken(lw, op, ins):
        raise TypeError("only 0-dimensional arrays can be converted to Python scalars")

    monkeypatch.setitem(converter.HANDLERS, "pd_op.conv2d", broken)
    with pytest.raises(ConversionError) as info:
        hwdeploy.convert(small_models["conv_basics"], "webgl", refresh=True)
    assert "failed on pd_op.conv2d (op " in str(info.value) and "TypeError: only 0-dimensional" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)  # the traceback is kept


def test_dropout_in_downscale_in_infer_mode_scales_by_one_minus_p(small_models):
    artifact = hwdeploy.convert(small_models["norms_pools"], "webgl", refresh=True)
    scales = [op["attrs"]["scale"] for op in _model_json(artifact)["ops"] if op["type"] == "scale"]
    assert any(abs(s - 0.75) < 1e-7 for s in scales), scales


def test_a_second_input_used_in_arithmetic_gives_a_host_stage(small_models):
    """fc(x) + y: the page computes fc(x) (its one export), the host adds y and fetches."""
    meta = hwdeploy.convert(small_models["two_inputs"], "webgl", refresh=True).metadata
    host = meta["host"]
    assert [i["name"] for i in host["inputs"]] == ["x1"] and meta["input"]["name"] == "x0"
    assert [op["type"] for op in host["ops"]] == ["pd_op.add", "pd_op.fetch"] and host["op_counts"] == {"pd_op.add": 1}
    assert [e["shape"] for e in host["exports"]] == [[1, 4]] and host["batched"]
    assert meta["ops"] == {"matmul_v2": 1, "elementwise_add": 1, "reshape2": 1}  # fc's bias only: + y is not here


def test_a_second_input_through_a_layer_is_refused_naming_the_op(small_models):
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.convert(small_models["second_input_in_a_layer"], "webgl", refresh=True)
    assert info.value.ops == ["pd_op.matmul"], str(info.value)
    assert "would run on the host, where hwdeploy computes only NMS and the arithmetic around it" in str(info.value)


def test_the_detector_gets_a_host_stage_for_its_scale_factor_and_nms():
    """tiny_detector: the page returns the boxes before their division by scale_factor and the class scores,
    packed in one output; the slices of scale_factor, the division and multiclass_nms3 run on the host."""
    from hwdeploy import zoo

    meta = hwdeploy.convert(zoo.get("tiny_detector").model, "webgl", refresh=True).metadata
    host = meta["host"]
    assert [i["name"] for i in host["inputs"]] == ["scale_factor"]
    assert host["op_counts"] == {"pd_op.slice": 2, "pd_op.concat": 1, "pd_op.unsqueeze": 1, "pd_op.divide": 1,
                                 "pd_op.multiclass_nms3": 1}
    cells = (zoo.DETECTOR_SIZE // 8) ** 2
    assert [e["shape"] for e in host["exports"]] == [[1, cells, 4], [1, zoo.DETECTOR_CLASSES, cells]]
    assert meta["output"]["shape"] == [1, cells * (4 + zoo.DETECTOR_CLASSES), 1, 1]
    assert [(f["name"], f["dtype"]) for f in host["fetch"]] == [("fetch_name_0", "float32"), ("fetch_name_1", "int32")]
    nms = next(op for op in host["ops"] if op["type"] == "pd_op.multiclass_nms3")
    assert nms["attrs"]["keep_top_k"] == zoo.DETECTOR_NMS["keep_top_k"] and nms["inputs"][2] is None


def test_dynamic_dims_need_input_shape(small_models):
    with pytest.raises(ConversionError, match="input_shape"):
        hwdeploy.convert(small_models["dynamic_hw"], "webgl", refresh=True)
    artifact = hwdeploy.convert(small_models["dynamic_hw"], "webgl", input_shape=[1, 3, 10, 7], refresh=True)
    assert artifact.metadata["input"]["shape"] == [1, 3, 10, 7]
    assert artifact.metadata["output"]["shape"] == [1, 4]
    with pytest.raises(OptionError, match="does not fit"):
        hwdeploy.convert(small_models["dynamic_hw"], "webgl", input_shape=[1, 4, 10, 7], refresh=True)


def test_batch_option_and_options_checked(small_models):
    artifact = hwdeploy.convert(small_models["conv_basics"], "webgl", batch=3, refresh=True)
    assert artifact.metadata["input"]["shape"][0] == 3 and artifact.metadata["output"]["shape"][0] == 3
    with pytest.raises(OptionError, match="unknown option"):
        hwdeploy.convert(small_models["conv_basics"], "webgl", bogus=1)
    with pytest.raises(OptionError, match="batch"):
        hwdeploy.convert(small_models["conv_basics"], "webgl", batch=0)


def test_size_report_and_limit(small_models):
    artifact = hwdeploy.convert(small_models["conv_basics"], "webgl", refresh=True)
    size = artifact.metadata["size"]
    files = sum(artifact.path(f).stat().st_size for f in artifact.files)
    assert size["total_bytes"] == files
    assert size["within_guidance"] is True and size["guidance_bytes"] == 10_000_000 and "within" in size["note"]
    with pytest.raises(ConversionError, match="over size_limit_mb"):
        hwdeploy.convert(small_models["conv_basics"], "webgl", size_limit_mb=0.001, refresh=True)


def test_weights_are_split_into_chunks(small_models):
    artifact = hwdeploy.convert(small_models["mobile_block"], "webgl", chunk_mb=0.0002, refresh=True)
    model = _model_json(artifact)
    assert model["chunkNum"] > 1 and artifact.metadata["size"]["chunks"] == model["chunkNum"]
    assert all(artifact.path(f"chunk_{i}.dat").stat().st_size <= 212 for i in range(1, model["chunkNum"] + 1))


def test_conversion_is_cached_by_content(small_models):
    first = hwdeploy.convert(small_models["extras"], "webgl", refresh=True)
    again = hwdeploy.convert(small_models["extras"], "webgl")
    assert not first.cached and again.cached and again.directory == first.directory
    other = hwdeploy.convert(small_models["extras"], "webgl", batch=2)
    assert other.directory != first.directory


def test_target_is_listed():
    targets = {t.name: (plugin, t) for plugin, t in hwdeploy.conversion_targets()}
    assert targets["webgl"][0] == "webgl" and targets["webgl"][1].device_kinds == ("webgl",)


def test_legacy_programs_are_refused():
    from hwdeploy import zoo

    legacy = zoo.get("mlp").legacy
    if legacy is None:
        pytest.fail("the zoo's mlp has no legacy export: " + zoo.get("mlp").legacy_error)
    with pytest.raises(ConversionError, match="PIR"):
        hwdeploy.convert(legacy, "webgl")


def test_the_gru_is_unrolled_over_its_sequence_and_other_rnns_are_refused(small_models):
    """gru_text: its initial state folds (full_with_tensor of static shapes), the GRU is unrolled step by step
    into matmuls and elementwise ops sharing 4-D vars (no reshape copies inside the loop, one recurrent weight);
    the numbers are checked in Chromium (test_webgl_zoo.py). An LSTM, or a two-way GRU, is refused naming rnn."""
    from hwdeploy import zoo

    artifact = hwdeploy.convert(zoo.get("gru_text").model, "webgl", input_shape=[1, 32], refresh=True)
    meta = artifact.metadata
    assert meta["passes"]["GRU unrolled over 32 steps"] == 1
    # the input gates, 31 steps (the first state is the constant zero: its product folds), the head
    assert meta["ops"]["matmul_v2"] == 1 + 31 + 1 and meta["ops"]["tanh"] == 32
    assert meta["passes"]["reshape copies"] <= 3
    assert meta["size"]["weights_bytes"] < 200_000  # the 64x192 recurrent weight is stored once, not per step

    with pytest.raises(UnsupportedOpsError, match=f"unrolled: at most {converter.MAX_UNROLLED_STEPS}") as info:
        hwdeploy.convert(zoo.get("gru_text").model, "webgl", input_shape=[1, converter.MAX_UNROLLED_STEPS + 1])
    assert info.value.ops == ["pd_op.rnn"]
    for name, why in (("lstm_sequence", "rnn mode LSTM"), ("two_way_gru", "bidirectional")):
        with pytest.raises(UnsupportedOpsError, match=why) as info:
            hwdeploy.convert(small_models[name], "webgl", input_shape=[1, 5, 8], refresh=True)
        assert info.value.ops == ["pd_op.rnn"]


def test_a_filled_constant_is_bounded_before_it_is_allocated():
    """pd_op.full / full_with_tensor take their shape from the program: a huge one is an error, not an allocation."""
    assert converter._filled((2, 3), 1.5, "float32").const.sum() == 9.0
    for shape in [(1 << 20, 1 << 20), (4, -1)]:
        with pytest.raises(ConversionError, match="a constant of shape"):
            converter._filled(shape, 0.0, "float32")


def test_token_ids_are_fed_as_their_embedding_looked_up_on_the_host():
    """transformer_encoder: the page's input is the token embedding [1, L, 64], the table ships beside the model
    (looked up by the predictor), the positions' embedding folds to a constant; a sequence length is needed."""
    from hwdeploy import zoo
    from hwdeploy.sdk.paddle_format import load_pir_program, read_params

    model = zoo.get("transformer_encoder").model
    with pytest.raises(ConversionError, match="dynamic dimensions .* pass input_shape"):
        hwdeploy.convert(model, "webgl", refresh=True)
    artifact = hwdeploy.convert(model, "webgl", input_shape=[1, 16], refresh=True)
    info = artifact.metadata["input"]
    assert info["name"] == "tokens" and info["dtype"] == "int64" and info["shape"] == [1, 16]
    assert info["embedding"] == {"rows": zoo.VOCAB, "dim": 64, "padding_idx": -1, "file": "embedding.npy"}
    table = np.load(artifact.path("embedding.npy"), allow_pickle=False)
    params = read_params(model.params, sorted(n for n, _, _ in load_pir_program(model.program).parameters))
    assert any(w.shape == table.shape and np.array_equal(w, table) for w in params.values())  # the token table
    assert _model_json(artifact)["vars"]["image"]["shape"] == [1, 16, 64]
    assert artifact.metadata["passes"]["ids looked up in their embedding on the host"] == 1


def test_every_lowered_op_is_covered_by_the_parity_models(small_models):
    """The parity tests (test_webgl_parity.py) run these models: each op the converter handles appears in one."""
    from hwdeploy.sdk.paddle_format import load_pir_program

    seen = set()
    for name in INPUTS:
        seen |= set(load_pir_program(small_models[name] / "model.json").op_types())
    # Integer ids need a zoo model (these take float32): test_webgl_zoo.py runs transformer_encoder's embedding.
    assert set(converter.HANDLERS) - seen == {"pd_op.embedding"}


def test_scalar_and_broadcast_legalisation_units():
    """binary(): constants become scale ops, numpy broadcasting becomes the shaders' conventions."""
    from hwdeploy_webgl.converter import Lowering, Value, binary

    lw = Lowering(program=None, params={})
    x = Value((1, 4, 3, 3), var="image")
    lw.var_shapes["image"] = (1, 4, 3, 3)
    y = binary(lw, "sub", x, Value((1,), const=np.array([2.0], np.float32)))
    assert lw.ops[-1]["type"] == "scale" and lw.ops[-1]["attrs"]["bias"] == -2.0 and y.shape == (1, 4, 3, 3)
    c = Value((1, 4, 1, 1), var=lw.emit("pool2d", {"X": ["image"]}, (1, 4, 1, 1)))
    binary(lw, "add", x, c)  # add/sub: legacy axis broadcasting, Y reshaped to its non-1 span
    add = lw.ops[-1]
    assert add["type"] == "elementwise_add" and add["attrs"]["axis"] == 1
    assert lw.var_shapes[add["inputs"]["Y"][0]] == (4,)
    binary(lw, "mul", x, c)  # mul/div: same-rank broadcasting (the shader clamps Y positions)
    mul = lw.ops[-1]
    assert mul["attrs"]["axis"] == -1 and lw.var_shapes[mul["inputs"]["Y"][0]] == (1, 4, 1, 1)
    binary(lw, "sub", c, x)  # x - y with x broadcast: -(y - x)
    assert [op["type"] for op in lw.ops[-2:]] == ["elementwise_sub", "scale"] and lw.ops[-1]["attrs"]["scale"] == -1


def test_the_options_reference_documents_this_plugin():
    from pathlib import Path

    import hwdeploy
    from hwdeploy.sdk.testing import assert_options_documented

    declared = [(p, s) for p, s in hwdeploy.option_schemas() if p == "webgl"]
    assert declared
    assert_options_documented(declared, Path(__file__).resolve().parents[3] / "docs" / "options.md")


def test_every_option_refuses_every_wrong_value(small_models):
    import hwdeploy
    from hwdeploy.sdk.testing import assert_refuses_wrong_options
    from hwdeploy_webgl.plugin import BACKEND, CONVERT_OPTIONS, KIND, OPTIONS
    from hwdeploy_webgl.predictor import WebGLPredictor

    model = hwdeploy.load_model(small_models["relu6_conv"])
    device = hwdeploy.Device(KIND, 0, backend=BACKEND)
    assert assert_refuses_wrong_options(OPTIONS, lambda options: WebGLPredictor(model, device, options)) >= 30
    assert assert_refuses_wrong_options(
        CONVERT_OPTIONS, lambda options: hwdeploy.convert(model, "webgl", **options)) >= 15
