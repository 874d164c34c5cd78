"""Input shapes (-1: the batch) of the small test models built by webgl_models.py (no Paddle import here)."""

INPUTS = {
    "conv_basics": [-1, 3, 12, 12],
    "mobile_block": [-1, 4, 8, 8],
    "norms_pools": [-1, 3, 8, 8],
    "elementwise": [-1, 3, 5, 6],
    "matmul_softmax": [-1, 4, 6],
    "shape_ops": [-1, 4, 6, 6],
    "up_down": [-1, 4, 5, 5],
    "encoder": [-1, 6, 8],
    "image_feed": [-1, 12],
    "extras": [-1, 5],
    "reductions": [-1, 4, 5, 6],
    "shuffle_chain": [-1, 4, 6, 6],
    "grid_ops": [-1, 4, 6, 6],
    "gru_sequence": [-1, 5, 8],
}

#: Models for the converter's error paths (not in the parity set): name -> input shapes.
SPECIAL = {
    "unsupported_mix": [[-1, 4, 6]],
    "two_inputs": [[-1, 4], [-1, 4]],
    "second_input_in_a_layer": [[-1, 4], [-1, 4]],
    "dynamic_hw": [[-1, 3, -1, -1]],
    "relu6_conv": [[-1, 3, 8, 8]],
    "refusal_chain": [[-1, 4, 6, 6]],
    "lstm_sequence": [[-1, 5, 8]],
    "two_way_gru": [[-1, 5, 8]],
}
