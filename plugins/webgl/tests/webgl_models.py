"""Small Paddle models covering every op the webgl converter lowers (run as a script: saves them all).

    python webgl_models.py OUT_DIR [NAME ...]

writes OUT_DIR/NAME/model.json + model.pdiparams (PIR) for each model below.
Weights are re-drawn so activations and outputs stay at unit scale (Paddle's
default inits give tiny outputs that any tolerance would pass).
"""

import sys
import zlib
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from webgl_model_inputs import INPUTS, SPECIAL


class ConvBasics(nn.Layer):
    """conv2d (bias, stride, dilation, groups, SAME, 4-value and [0, 1] paddings), pools, relu."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2D(3, 8, 3, padding=1)
        self.c2 = nn.Conv2D(8, 8, 3, stride=2, padding="SAME")
        self.c3 = nn.Conv2D(8, 6, 3, padding=2, dilation=2, groups=2)
        self.c4 = nn.Conv2D(6, 4, 2, padding=[0, 1], bias_attr=False)
        self.c5 = nn.Conv2D(4, 5, 3, padding=[1, 0, 2, 1])
        self.c6 = nn.Conv2D(5, 4, 1, padding="VALID")

    def forward(self, x):
        y = F.relu(self.c1(x))
        y = F.max_pool2d(y, 3, 1, 1)
        y = F.relu(self.c2(y))
        y = self.c3(y)
        y = F.avg_pool2d(y, 3, 1, 1)
        y = self.c4(y)
        y = F.relu(self.c5(y))
        return self.c6(y)


class MobileBlock(nn.Layer):
    """depthwise conv + batch_norm (folded) + relu6/hardswish/hardsigmoid/leaky_relu/sigmoid/tanh/silu."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2D(4, 12, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(12)
        self.dw = nn.Conv2D(12, 12, 3, padding=1, groups=12, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(12)
        self.project = nn.Conv2D(12, 4, 1)

    def forward(self, x):
        y = F.relu6(self.bn1(self.expand(x)) * 3.0)
        y = F.hardswish(self.bn2(self.dw(y)))
        y = self.project(y)
        a = F.hardsigmoid(y) + F.leaky_relu(y, 0.1) + F.sigmoid(y) - paddle.tanh(y)
        return a + F.silu(x) + F.relu6(y + x)


class NormsAndPools(nn.Layer):
    """batch_norm not after a conv (shader), BatchNorm1D (mul/add), global/adaptive pools, dropout (both modes:
    downscale_in_infer scales by 1 - p, its p a shape-[1] tensor)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2D(3)
        self.bn1d = nn.BatchNorm1D(3)
        self.drop = nn.Dropout(0.3)
        self.drop_down = nn.Dropout(0.25, mode="downscale_in_infer")

    def forward(self, x):
        y = self.bn(x + 1.0)
        g_avg = F.adaptive_avg_pool2d(y, 1)
        g_max = F.adaptive_max_pool2d(y, 1)
        a2 = F.adaptive_avg_pool2d(y, 2)  # 8x8 -> 2x2: a fixed window
        a3 = F.adaptive_avg_pool2d(y, 3)  # 8x8 -> 3x3: the adaptive shader
        m2 = F.adaptive_max_pool2d(y, 4)
        ceil = F.max_pool2d(y, 3, 2, 0, ceil_mode=True)  # 8 -> 4
        incl = F.avg_pool2d(y, 3, 2, 1, exclusive=False)  # 8 -> 4
        feats = paddle.concat([g_avg.flatten(1), g_max.flatten(1), a2.flatten(1), a3.flatten(1), m2.flatten(1),
                               ceil.flatten(1), incl.flatten(1)], axis=1)
        return paddle.concat([self.drop(feats), self.drop_down(self.bn1d(g_avg.flatten(1)))], axis=1)


class Elementwise(nn.Layer):
    """add/sub/mul/div broadcasting, scalar constants, pow/square/sqrt/exp, mean/sum reductions."""

    def __init__(self):
        super().__init__()
        self.w = self.create_parameter([3, 1, 1], default_initializer=nn.initializer.Normal())
        self.row = self.create_parameter([6], default_initializer=nn.initializer.Normal())

    def forward(self, x):
        mean_c = x.mean(axis=[2, 3], keepdim=True)  # [N, C, 1, 1] activation
        y = (x - mean_c) * mean_c / (mean_c * mean_c + 1.0)
        z = (x * self.w + self.row) / (paddle.exp(x * 0.25) + 0.5)
        u = 1.0 - x / 3.0 + paddle.pow(x, 2) * 0.1 - paddle.square(x) * 0.05
        s = paddle.sqrt(paddle.exp(x * 0.5)) + x.sum(axis=1, keepdim=True) - x.mean(axis=-1, keepdim=True)
        r = x.sum(axis=[1, 3]).unsqueeze(1).unsqueeze(-1) * 0.1
        return y + z + u + s - r


class MatmulSoftmax(nn.Layer):
    """matmul (2-D, transpose_y, 3-D x 2-D, batched 4-D), softmax (last axis, channel axis, large logits)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.w = self.create_parameter([5, 8], default_initializer=nn.initializer.Normal())

    def forward(self, x):  # x: [N, 4, 6]
        h = self.fc(x)  # [N, 4, 8]
        q = h.reshape([0, 4, 2, 4]).transpose([0, 2, 1, 3])  # [N, 2, 4, 4]
        att = F.softmax(paddle.matmul(q, q, transpose_y=True) * 0.5, axis=-1)
        ctx = paddle.matmul(att, q).transpose([0, 2, 1, 3]).reshape([0, 4, 8])
        big = F.softmax(h * 200.0, axis=-1)  # logits in the hundreds: needs the max shift
        chan = F.softmax(ctx.reshape([0, 4, 2, 4]), axis=1).reshape([0, 4, 8])
        proj = paddle.matmul(ctx.reshape([-1, 8]), self.w, transpose_y=True).reshape([-1, 4, 5])
        return paddle.concat([ctx + big + chan, proj], axis=-1)


class ShapeOps(nn.Layer):
    """reshape/flatten/transpose/squeeze/unsqueeze/concat(5)/split/slice/stack/pad(constant, reflect, replicate)."""

    def __init__(self):
        super().__init__()
        self.gain = self.create_parameter([1], default_initializer=nn.initializer.Constant(1.5))

    def forward(self, x):  # [N, 4, 6, 6]
        a, b = paddle.split(x, 2, axis=1)
        p, q, r = paddle.split(x, [1, 2, -1], axis=2)
        c = paddle.concat([a, b * 2.0, a - b, b, a], axis=1)[:, 3:7]  # 5 inputs, channel slice at 3
        d = F.pad(x, [1, 2, 0, 1], value=1.0)[:, :, :6, 1:7]
        e = F.pad(x, [1, 1, 2, 0], mode="reflect")[:, :, 2:, 1:-1]
        f = F.pad(x, [0, 1, 1, 0], mode="replicate")[:, :, 1:, :6]
        g = paddle.stack([p.squeeze(2), r.mean(axis=2)], axis=2)  # [N, 4, 2, 6]
        t = x.transpose([0, 2, 3, 1]).flatten(2).reshape([0, 6, 4, 6]).transpose([0, 2, 1, 3])
        h = paddle.concat([g, q], axis=2).unsqueeze(1).squeeze(1)  # [N, 4, 4, 6]
        return (c + d + e + f + t)[:, :, 1:5, :] + h * self.gain


class UpDown(nn.Layer):
    """conv2d_transpose (stride 2, asymmetric kernel padding, output_padding), bilinear/nearest resize."""

    def __init__(self):
        super().__init__()
        self.up = nn.Conv2DTranspose(4, 3, 3, stride=2, padding=[1, 0], output_padding=1)
        self.up2 = nn.Conv2DTranspose(4, 3, 2, stride=2)
        self.c = nn.Conv2D(3, 3, 3, padding=1)

    def forward(self, x):  # [N, 4, 5, 5]
        a = self.up(x)  # [N, 3, 10, 12]
        b = F.interpolate(self.up2(x), size=[10, 12], mode="bilinear", align_corners=True)
        c = F.interpolate(x[:, :3], scale_factor=2, mode="bilinear")[:, :, :, :]  # [N, 3, 10, 10]
        d = F.interpolate(x[:, 1:], scale_factor=2, mode="nearest")
        e = F.interpolate(x[:, :3], scale_factor=2, mode="bilinear", align_mode=1, align_corners=False)
        cd = F.pad(c + d + e, [1, 1, 0, 0])
        return self.c(a + b + cd)


class Encoder(nn.Layer):
    """layer_norm, multi-head attention, gelu(tanh), a TransformerEncoderLayer, shape arithmetic."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1)
        self.ln = nn.LayerNorm(8)

    def forward(self, x):  # [N, 6, 8]
        n = paddle.shape(x)[0]
        y = self.layer(x).reshape([n, -1, 8])
        return F.gelu(self.ln(y), approximate=True)


class ImageFeed(nn.Layer):
    """An op reading the input directly in another shape, and an activation on the input itself."""

    def __init__(self):
        super().__init__()
        self.bias = self.create_parameter([12], default_initializer=nn.initializer.Normal())

    def forward(self, x):  # [N, 12]
        return F.relu(x).reshape([-1, 3, 4]).transpose([0, 2, 1]).flatten(1) + F.sigmoid(x) + self.bias


class Extras(nn.Layer):
    """assign, casts, swish, shape arithmetic folded into constants."""

    def __init__(self):
        super().__init__()
        self.scale = self.create_parameter([5], default_initializer=nn.initializer.Normal())

    def forward(self, x):  # [N, 5]
        y = paddle.assign(x) * self.scale
        width = paddle.shape(x)[1].cast("float32")
        return F.swish(y) + x.cast("float64").cast("float32") / width


class Reductions(nn.Layer):
    """max/min over the channel, a spatial and several axes (max pools over a moved axis), with keepdim or not;
    a bilinear resize to a size read from a static shape (folded to constants)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(4, 6, 3, padding=1)

    def forward(self, x):  # [N, 4, 5, 6]
        y = self.conv(x)
        channel = y.max(axis=1, keepdim=True) - y.min(axis=1, keepdim=True)          # [N, 1, 5, 6]
        rows = y.max(axis=2)                                                         # [N, 6, 6]
        both = y.min(axis=[2, 3], keepdim=True)                                      # [N, 6, 1, 1]
        up = F.interpolate(channel, size=paddle.shape(x)[2:] * 2, mode="bilinear", align_corners=False)
        return paddle.concat([up.flatten(1), rows.flatten(1), both.flatten(1)], axis=1)


class UnsupportedMix(nn.Layer):
    """Ops Paddle.js cannot compute exactly: every one must be named by UnsupportedOpsError."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        y = F.gelu(self.fc(x)) + F.leaky_relu(x, 2.0) + paddle.erf(x) + paddle.cumsum(x, axis=-1)
        return paddle.maximum(y, x * 0.5) + x.max(axis=-1, keepdim=True)


class GridOps(nn.Layer):
    """clip (a shifted relu6), and a PicoDet-style cell grid from arange + meshgrid (folded to constants)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(4, 2, 3, padding=1)

    def forward(self, x):  # [N, 4, 6, 6]
        y = self.conv(x).clip(-0.5, 0.7)
        ys, xs = paddle.meshgrid(paddle.arange(x.shape[2], dtype="float32"), paddle.arange(x.shape[3], dtype="float32"))
        return y + (ys * 0.1 - xs * 0.05).unsqueeze(0).unsqueeze(0)


class RefusalChain(nn.Layer):
    """Two refused leaky_relus (slope > 1) with a conv between: the second reads (through the conv) what the
    first produced, and both must be listed (x2), not only the first."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(4, 4, 1)

    def forward(self, x):
        return F.leaky_relu(self.conv(F.leaky_relu(x, 2.0)), 2.0)


class ShuffleChain(nn.Layer):
    """Two channel shuffles (5-D transposes, lowered on merged axes) with a conv between."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(4, 4, 1)

    @staticmethod
    def shuffle(x):
        n, c, h, w = x.shape
        return x.reshape([-1, 2, c // 2, h, w]).transpose([0, 2, 1, 3, 4]).reshape([-1, c, h, w])

    def forward(self, x):
        return self.shuffle(F.relu(self.conv(self.shuffle(x))))


class TwoInputs(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        return self.fc(x) + y


class SecondInputInALayer(nn.Layer):
    """The second input through a Linear: a matmul the host stage does not compute, so a refusal."""

    def __init__(self):
        super().__init__()
        self.fc, self.fc_y = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x, y):
        return self.fc(x) + self.fc_y(y)


class DynamicHW(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding=1)

    def forward(self, x):
        return F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1)


class Relu6Conv(nn.Layer):
    """relu6 with inputs well above 6: a missing threshold in the Paddle.js model changes the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding=1)

    def forward(self, x):
        return F.relu6(self.conv(x) * 8.0)


class GruSequence(nn.Layer):
    """A GRU over a float sequence from a zero state (full_with_tensor), then its last state through a Linear."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):  # [N, 5, 8]
        sequence, last = self.rnn(x)
        return paddle.concat([self.head(sequence), self.head(last).transpose([1, 0, 2])], axis=1)


class LstmSequence(nn.Layer):
    """An LSTM: the converter lowers only a one-layer, one-way GRU."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 16)

    def forward(self, x):  # [N, 5, 8]
        return self.rnn(x)[0]


class TwoWayGru(nn.Layer):
    """A bidirectional GRU: only one direction is lowered."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 16, direction="bidirect")

    def forward(self, x):  # [N, 5, 8]
        return self.rnn(x)[0]


SPECIAL_CLASSES = {"unsupported_mix": UnsupportedMix, "two_inputs": TwoInputs, "dynamic_hw": DynamicHW,
                   "second_input_in_a_layer": SecondInputInALayer,
                   "relu6_conv": Relu6Conv, "refusal_chain": RefusalChain,
                   "lstm_sequence": LstmSequence, "two_way_gru": TwoWayGru}

CLASSES = {
    "conv_basics": ConvBasics, "mobile_block": MobileBlock, "norms_pools": NormsAndPools, "elementwise": Elementwise,
    "matmul_softmax": MatmulSoftmax, "shape_ops": ShapeOps, "up_down": UpDown, "encoder": Encoder,
    "image_feed": ImageFeed, "extras": Extras, "reductions": Reductions, "shuffle_chain": ShuffleChain,
    "grid_ops": GridOps, "gru_sequence": GruSequence,
}
assert set(CLASSES) == set(INPUTS)


def build(name: str, out_dir: Path) -> Path:
    if name in SPECIAL:
        cls, shapes = SPECIAL_CLASSES[name], SPECIAL[name]
    else:
        cls, shapes = CLASSES[name], [INPUTS[name]]
    paddle.seed(0)
    layer = cls()
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for p in layer.parameters():
        fan_in = int(np.prod(p.shape[1:])) if len(p.shape) > 1 else 1
        if p.name.endswith(("w_1", "w_2")) and len(p.shape) == 1:  # batch norm mean / variance
            value = rng.uniform(0.5, 1.5, p.shape) if p.name.endswith("w_2") else rng.normal(0, 0.3, p.shape)
        else:
            value = rng.standard_normal(p.shape) / np.sqrt(max(fan_in, 1))
        p.set_value(value.astype("float32"))
    layer.eval()
    prefix = out_dir / name / "model"
    specs = [paddle.static.InputSpec(shape, "float32", f"x{i}" if len(shapes) > 1 else "x")
             for i, shape in enumerate(shapes)]
    paddle.jit.save(layer, str(prefix), input_spec=specs)
    return prefix


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for model_name in sys.argv[2:] or [*CLASSES, *SPECIAL_CLASSES]:
        build(model_name, out)
