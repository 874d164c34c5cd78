"""Build the small test models (run in a subprocess: it imports Paddle).

    python make_models.py OUTDIR

- ``mlp``: float input [N, 16] -> 10 logits (a classifier), unit-scale outputs.
- ``seqreg``: int64 token ids [N, 12] (vocab 50) -> embedding -> mean -> 3 values (a regression).
- ``tinyscale``: the mlp with outputs scaled by 1e-8 (too small to judge: must be rejected).
"""

import sys

import paddle


class Mlp(paddle.nn.Layer):
    def __init__(self, scale=1.0):
        super().__init__()
        self.fc1 = paddle.nn.Linear(16, 32)
        self.fc2 = paddle.nn.Linear(32, 10)
        self.scale = scale

    def forward(self, x):
        return self.fc2(paddle.nn.functional.relu(self.fc1(x))) * self.scale


class SeqReg(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.embed = paddle.nn.Embedding(50, 8)
        self.fc = paddle.nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(paddle.tanh(self.embed(ids)).mean(axis=1))


def main(out):
    paddle.seed(7)
    for name, layer, spec in [
        ("mlp", Mlp(), [paddle.static.InputSpec([None, 16], "float32", "x")]),
        ("seqreg", SeqReg(), [paddle.static.InputSpec([None, 12], "int64", "ids")]),
        ("tinyscale", Mlp(1e-8), [paddle.static.InputSpec([None, 16], "float32", "x")]),
    ]:
        layer.eval()
        paddle.jit.save(layer, f"{out}/{name}/inference", input_spec=spec)


if __name__ == "__main__":
    main(sys.argv[1])
