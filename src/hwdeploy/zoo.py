"""The built-in model zoo: nine real architectures, built with Paddle on first use and cached.

    from hwdeploy import zoo
    zoo.names()                       # ['mlp', 'mobilenet_v2', 'resnet18', ...]
    z = zoo.get("mobilenet_v2")       # built once, then read from the cache
    p = hwdeploy.predictor(z.model, device="cpu")
    p.run(*z.sample_inputs(batch=4))

Weights are deterministic and re-initialised so that activations and outputs
are unit-scale (random-init Paddle vision models output ~1e-8, which makes
any parity check meaningless): He-normal weights from a per-model numpy seed,
batch-norm statistics calibrated on sample inputs, and the output layer
rescaled so the outputs have mean 0 and std 1 on those inputs.

One model is *trained* instead, so that accuracy (and what lower precision
does to it) means something: ``digits_cnn``, a MobileNet-like classifier
trained at build time on scikit-learn's bundled 8x8 digits (no download),
upsampled to 32x32. Its held-out test split, its calibration split (for
post-training quantization) and its fp32 test accuracy are kept with the
build (:meth:`ZooModel.test_split`, :meth:`ZooModel.calibration_split`,
``build_info["training"]``). Building it needs scikit-learn.

Each model is exported in the PIR format (``NAME.json`` + ``NAME.pdiparams``)
and, where Paddle still can, in the legacy format (``NAME.pdmodel``), which
Paddle Lite and Paddle.js need. Building happens in child processes: importing
this module or calling :func:`get` on a cached model never imports Paddle, and
a crash while building cannot take the caller down.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy.sdk import hostinfo
from hwdeploy.sdk.cache import build_once, cache_dir
from hwdeploy.errors import BackendError, ConversionError, ModelError, ModelNotFoundError
from hwdeploy.contract.model import Model, load_model

#: Bump when an architecture, its initialisation or the export changes: old caches are then ignored.
ZOO_VERSION = "2"
#: Seed of the sample batch that calibrates batch norms and output scale (tests use other seeds).
CALIBRATION_SEED = 20240917
CALIBRATION_BATCH = 16
BUILD_TIMEOUT = 600.0
TASKS = ("classification", "segmentation", "sequence", "regression", "detection")


@dataclass(frozen=True)
class ZooInput:
    """One model input: name, shape (``-1`` = dynamic), dtype and the distribution of realistic values.

    ``example_shape`` gives the size used for dynamic dimensions other than
    the batch (``-1`` in it stands for the batch), e.g. the sequence length.
    ``distribution`` is ``"normal"`` (N(0, 1), like normalised images),
    ``"tokens"`` (integers uniform in ``[0, high)``) or ``"scale"`` (a
    detector's resize factors, uniform in ``SCALE_RANGE``: positive, as a
    preprocessor makes them).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    distribution: str
    high: int | None = None
    example_shape: tuple[int, ...] | None = None

    def concrete_shape(self, batch: int = 1, **dims: int) -> tuple[int, ...]:
        """The shape with the batch (and the example sizes of other dynamic dims) filled in."""
        example = self.example_shape or self.shape
        shape = tuple(batch if i == 0 and d == -1 else d for i, d in enumerate(example))
        if "seq_len" in dims and len(self.shape) > 1 and self.shape[1] == -1:
            shape = shape[:1] + (dims["seq_len"],) + shape[2:]
        return shape

    def sample(self, rng: np.random.Generator, batch: int = 1, **dims: int) -> np.ndarray:
        shape = self.concrete_shape(batch, **dims)
        if self.distribution == "normal":
            return rng.standard_normal(shape).astype(self.dtype)
        if self.distribution == "tokens":
            return rng.integers(0, self.high, size=shape).astype(self.dtype)
        if self.distribution == "scale":
            return rng.uniform(*SCALE_RANGE, size=shape).astype(self.dtype)
        raise ValueError(f"unknown distribution {self.distribution!r}")

    def to_dict(self) -> dict[str, Any]:
        dist = {"normal": "normal(0,1)", "scale": f"uniform in [{SCALE_RANGE[0]:g},{SCALE_RANGE[1]:g}]"}.get(
            self.distribution, f"uniform integers in [0,{self.high})")
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "distribution": dist,
                "example_shape": list(self.example_shape or self.shape)}


@dataclass(frozen=True)
class ZooEntry:
    """What a zoo model is, known without building it."""

    name: str
    description: str
    task: str
    inputs: tuple[ZooInput, ...]
    batch_range: tuple[int, int] = (1, 8)
    #: Output layout in words (``"logits [N, 1000]"``).
    output: str = ""
    #: A detector's NMS settings (``multiclass_nms3``'s attributes), which detection-aware parity needs.
    nms: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description, "task": self.task,
               "inputs": [i.to_dict() for i in self.inputs], "batch_range": list(self.batch_range),
               "output": self.output}
        if self.nms:
            out["nms"] = dict(self.nms)
        return out


def _image(size: int) -> ZooInput:
    return ZooInput("x", (-1, 3, size, size), "float32", "normal")


VOCAB = 1000
MAX_SEQ_LEN = 128
#: Trained zoo models: their weights come from training on a bundled dataset, not from a random init.
TRAINED = ("digits_cnn", "digits_resnet")
DIGITS_SIZE = 32
#: Seeds of the digits split (test / calibration / train) and of training (init, shuffling).
DIGITS_SPLIT_SEED = 16
DIGITS_TEST = 360
DIGITS_CALIBRATION = 64
DIGITS_EPOCHS = 6
DIGITS_BATCH = 64
_TOKENS = ZooInput("tokens", (-1, -1), "int64", "tokens", high=VOCAB, example_shape=(-1, 32))
#: A detector's scale_factor (resized / original, per axis) as a preprocessor makes it: always positive.
SCALE_RANGE = (0.5, 2.0)
DETECTOR_SIZE = 64
DETECTOR_CLASSES = 3
#: multiclass_nms3 as PaddleDetection's exports call it (PP-PicoDet's settings, scaled to 64 anchors).
DETECTOR_NMS = {"score_threshold": 0.3, "nms_threshold": 0.5, "nms_top_k": 64, "keep_top_k": 20,
                "background_label": -1}
SEGMENTER_SIZE = 128
SEGMENTER_CLASSES = 4
OCR_DET_SIZE = 128
OCR_REC_SHAPE = (32, 100)  # height x width of a text-line crop, as CRNN takes it
OCR_CHARSET = 36  # 0-9a-z; CTC adds the blank at index 0
OCR_STEPS = OCR_REC_SHAPE[1] // 4
DETECTOR_REG_MAX = 7  # distribution-focal boxes: each edge distance is a softmax over 0..REG_MAX strides
DETECTOR_BACKGROUND_LOGIT = 2.5  # score logits shifted down by this: sigmoid(-2.5) = 0.08 for an average cell

_ENTRIES: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("mlp", "3-layer perceptron (64 -> 128 -> 128 -> 8, ReLU)", "regression",
             (ZooInput("x", (-1, 64), "float32", "normal"),), output="values [N, 8]"),
    ZooEntry("mobilenet_v2", "MobileNetV2 (paddle.vision, width 1.0, 1000 classes), 224x224 RGB", "classification",
             (_image(224),), output="logits [N, 1000]"),
    ZooEntry("resnet18", "ResNet-18 (paddle.vision, 1000 classes), 224x224 RGB", "classification",
             (_image(224),), output="logits [N, 1000]"),
    ZooEntry("transformer_encoder",
             f"Transformer encoder: token + learned position embedding (d=64), 2 post-norm encoder layers (4-head "
             f"self-attention, FFN 128, ReLU), mean pooling, 10-class head; vocab {VOCAB}, sequence length "
             f"1..{MAX_SEQ_LEN}", "classification",
             (_TOKENS,), output="logits [N, 10]"),
    ZooEntry("gru_text", f"GRU tagger: embedding (32) + 1-layer GRU (64) + per-token 8-tag head; vocab {VOCAB}",
             "sequence", (_TOKENS,), output="tag logits [N, L, 8]"),
    ZooEntry("digits_cnn", "MobileNet-like digit classifier TRAINED at build time on scikit-learn's bundled 8x8"
             " digits upsampled to 32x32 (inverted residuals: 1x1 expand, 3x3 depthwise, 1x1 project, BN,"
             " hardswish/relu6), 10 classes", "classification",
             (ZooInput("x", (-1, 1, DIGITS_SIZE, DIGITS_SIZE), "float32", "normal"),), output="logits [N, 10]"),
    ZooEntry("digits_resnet", "ResNet-style digit classifier TRAINED at build time on the same digits (3x3 stem"
             " with stride 2, three basic residual blocks of 3x3 convs with 32, 64 and 128 channels, BN, ReLU):"
             " dense convolutions, where int8 pays off", "classification",
             (ZooInput("x", (-1, 1, DIGITS_SIZE, DIGITS_SIZE), "float32", "normal"),), output="logits [N, 10]"),
    ZooEntry("unet_small", "2-level U-Net: conv-BN-ReLU blocks, max-pool down, 2x2 transposed-conv up, skip"
             " concatenations, 4-class per-pixel head; 64x64 RGB", "segmentation",
             (_image(64),), output="per-pixel logits [N, 4, 64, 64]"),
    ZooEntry("tiny_segmenter", "Segmentation net in PP-LiteSeg's layout: 4 stride-2 conv-BN-ReLU stages, a"
             " pyramid-pooling context (global pool, bilinear back), two attention fusions (channel mean/max"
             " spatial attention over a bilinear upsample to the run-time size of the finer map), a"
             f" {SEGMENTER_CLASSES}-class head at 1/4 resolution resized bilinearly to the input's run-time size;"
             f" {SEGMENTER_SIZE}x{SEGMENTER_SIZE} RGB", "segmentation", (_image(SEGMENTER_SIZE),), batch_range=(1, 4),
             output=f"per-pixel logits [N, {SEGMENTER_CLASSES}, {SEGMENTER_SIZE}, {SEGMENTER_SIZE}]"),
    ZooEntry("tiny_detector", f"Anchor-free detector in PP-PicoDet's layout: 3 stride-2 conv-BN-ReLU stages"
             f" ({DETECTOR_SIZE}x{DETECTOR_SIZE} RGB -> 8x8 cells), per-cell class scores (sigmoid,"
             f" {DETECTOR_CLASSES} classes) and box distances (exp), boxes divided by scale_factor, then"
             f" multiclass_nms3 (score > {DETECTOR_NMS['score_threshold']}, IoU {DETECTOR_NMS['nms_threshold']},"
             f" keep {DETECTOR_NMS['keep_top_k']} per image)", "detection",
             (_image(DETECTOR_SIZE), ZooInput("scale_factor", (-1, 2), "float32", "scale")), batch_range=(1, 4),
             output="bbox [K, 6] (class, score, x1, y1, x2, y2; K = sum of bbox_num), bbox_num [N] int32",
             nms=DETECTOR_NMS),
    ZooEntry("tiny_detector_raw", f"The detector's raw export (no NMS), with PP-PicoDet's distribution-focal box"
             f" head: each edge distance a softmax over 0..{DETECTOR_REG_MAX} strides times their positions (a"
             f" matmul with a 1-D arange), cell centres from arange/meshgrid; boxes in input pixels",
             "detection", (_image(DETECTOR_SIZE),), batch_range=(1, 4),
             output=f"per-cell boxes and scores [N, {(DETECTOR_SIZE // 8) ** 2}, {4 + DETECTOR_CLASSES}]"
                    f" (x1, y1, x2, y2, then {DETECTOR_CLASSES} sigmoid class scores)"),
    ZooEntry("lcnet_small", "Classifier in PP-LCNet's layout (x0.25): depthwise-separable blocks (3x3 then 5x5"
             " depthwise, BN, hardswish), squeeze-and-excitation (global pool, 1x1 convs, ReLU, hardsigmoid) in the"
             " last two blocks, 1x1 expansion conv, dropout (downscale_in_infer), 1000 classes; 224x224 RGB",
             "classification", (_image(224),), output="logits [N, 1000]"),
    ZooEntry("shufflenet_small", "ShuffleNetV2-style classifier (x0.5, 2 blocks per stage): channel split, branch,"
             " concat and channel shuffle (5-D reshape/transpose), stride-2 blocks with two branches, 1000"
             " classes; 224x224 RGB", "classification", (_image(224),), output="logits [N, 1000]"),
    ZooEntry("ocr_detector", f"DB-style text detector (PP-OCR's det layout): 5 stride-2 conv-BN-hardswish stages,"
             f" an FPN with nearest 2x upsampling and additions, per-level 3x3 convs upsampled to 1/4 and"
             f" concatenated, a DB head of 3x3 conv and two 2x2 transposed convs back to full size, sigmoid;"
             f" {OCR_DET_SIZE}x{OCR_DET_SIZE} RGB", "segmentation", (_image(OCR_DET_SIZE),), batch_range=(1, 4),
             output=f"text probability map [N, 1, {OCR_DET_SIZE}, {OCR_DET_SIZE}]"),
    ZooEntry("ocr_recognizer", f"CRNN/SVTR-style text recogniser: conv-BN-ReLU stages with 2x2 then 2x1 max pools"
             f" down to height 1, the width as a sequence of {OCR_STEPS} steps, one global-mixing"
             f" (self-attention) block, a CTC head over {OCR_CHARSET} characters + blank, softmax;"
             f" {OCR_REC_SHAPE[0]}x{OCR_REC_SHAPE[1]} RGB text-line crops", "sequence",
             (ZooInput("x", (-1, 3, *OCR_REC_SHAPE), "float32", "normal"),),
             output=f"CTC probabilities [N, {OCR_STEPS}, {OCR_CHARSET + 1}] (blank at 0)"),
]}


@dataclass
class ZooModel:
    """A built zoo model: the PIR :class:`~hwdeploy.Model`, the legacy one (or why not), and its description."""

    entry: ZooEntry
    model: Model
    legacy: Model | None
    legacy_error: str
    directory: Path
    #: Facts recorded at build time (seconds, output scale on the calibration batch, Paddle version).
    build_info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.entry.name

    def sample_inputs(self, batch: int = 1, seed: int = 0, **dims: int) -> list[np.ndarray]:
        """Realistic inputs (images ~N(0,1), tokens uniform in the vocabulary), one array per model input.

        ``seq_len=`` overrides the example sequence length of token models.
        """
        return sample_inputs(self.entry.name, batch, seed, **dims)

    @property
    def trained(self) -> bool:
        return self.entry.name in TRAINED

    def test_split(self) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, labels)`` of the held-out test split of a trained model (never trained or calibrated on)."""
        with np.load(self._data("test")) as data:
            return data["x"], data["y"]

    def calibration_split(self) -> np.ndarray:
        """Inputs of a trained model's calibration split (training images, disjoint from the test split)."""
        with np.load(self._data("calibration")) as data:
            return data["x"]

    @property
    def test_accuracy(self) -> float:
        """fp32 top-1 accuracy on :meth:`test_split`, measured at build time."""
        self._data("test")
        return float(self.build_info["training"]["fp32_test_accuracy"])

    def _data(self, split: str) -> Path:
        if not self.trained:
            raise ModelError(f"zoo model {self.name!r} is not trained: it has no {split} split"
                             f" (trained zoo models: {', '.join(TRAINED)})", self.directory)
        return self.directory / "data" / f"{split}.npz"


def names() -> list[str]:
    """The zoo's model names."""
    return list(_ENTRIES)


def entry(name: str) -> ZooEntry:
    """The description of zoo model ``name``; :class:`~hwdeploy.ModelNotFoundError` lists the names if unknown."""
    try:
        return _ENTRIES[name]
    except KeyError:
        raise ModelNotFoundError(f"no zoo model named {name!r}; the zoo has: {', '.join(_ENTRIES)}", name) from None


def sample_inputs(name: str, batch: int = 1, seed: int = 0, **dims: int) -> list[np.ndarray]:
    """Sample inputs for zoo model ``name`` without building it (numpy only)."""
    e = entry(name)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    rng = np.random.default_rng(seed)
    return [spec.sample(rng, batch, **dims) for spec in e.inputs]


def zoo_root() -> Path:
    """The cache directory of this zoo version for the installed Paddle (``$HWDEPLOY_CACHE_DIR/zoo/...``).

    Keyed by a hash of this file too: editing a model's definition can never serve stale weights.
    """
    return cache_dir("zoo", f"v{ZOO_VERSION}-{_source_hash()}-paddle{_paddle_version()}")


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]


def _paddle_version() -> str:
    return hostinfo.paddle_version() or "none"


_lock = threading.Lock()
_loaded: dict[tuple[str, str], ZooModel] = {}


def calibration_of(model) -> np.ndarray | None:
    """The calibration split of a trained zoo model (what ``precision="int8"`` calibrates on by default), else None."""
    name = (getattr(model, "metadata", None) or {}).get("zoo")
    return get(name).calibration_split() if name in TRAINED else None


def get(name: str) -> ZooModel:
    """The zoo model ``name``, built on first use (a few seconds, in child processes) and cached on disk.

    Safe to call from several processes at once: one builds, the others wait
    for it and read the published copy. A cached copy that fails validation
    is rebuilt.
    """
    e = entry(name)
    root = zoo_root()
    key = (name, str(root))
    with _lock:
        if key in _loaded:
            return _loaded[key]
        final = root / name
        lock = root / f".{name}.lock"
        with _file_lock(lock):  # the other processes wait here for the one that builds (or repairs)
            build_once(final, lambda tmp: _build(name, tmp))  # verifies a cached entry; a damaged one is rebuilt
        try:
            model = _load(e, final)
        except ModelError:
            with _file_lock(lock):
                try:  # another process may have repaired it meanwhile
                    model = _load(e, final)
                except ModelError:
                    # A damaged cache entry (disk full, manual edits): move it away and build again.
                    trash = final.with_name(f".{name}.broken.{os.getpid()}")
                    os.rename(final, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                    build_once(final, lambda tmp: _build(name, tmp))
                    model = _load(e, final)
        _loaded[key] = model
        return model


def export(name: str, dest_dir: str | os.PathLike, format: str = "pir") -> Path:
    """Copy zoo model ``name`` into ``dest_dir`` as ``NAME.json`` (``"pir"``) or ``NAME.pdmodel`` (``"legacy"``).

    Returns the program file's path (which :func:`hwdeploy.load_model` accepts);
    the ``NAME.pdiparams`` file lies beside it. Raises
    :class:`~hwdeploy.ConversionError` if Paddle could not write the legacy format.
    """
    if format not in ("pir", "legacy"):
        raise ValueError(f"format must be 'pir' or 'legacy', got {format!r}")
    z = get(name)
    model = z.model if format == "pir" else z.legacy
    if model is None:
        raise ConversionError(f"zoo model {name!r} has no legacy export: {z.legacy_error}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    program = dest / model.program.name
    shutil.copyfile(model.program, program)
    shutil.copyfile(model.params, dest / model.params.name)
    return program


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the OS if this process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load(e: ZooEntry, directory: Path) -> ZooModel:
    info_path = directory / "build.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{info_path}: unreadable zoo build record ({exc})", info_path) from None
    metadata_ = {"zoo": e.name, "zoo_version": ZOO_VERSION, "task": e.task, "batch_range": list(e.batch_range),
                 "inputs": [i.to_dict() for i in e.inputs], "output": e.output, "description": e.description}
    if e.nms:
        metadata_["nms"] = dict(e.nms)
    model = load_model(directory / "pir" / f"{e.name}.json")
    model.metadata.update(metadata_)
    legacy = None
    if info.get("legacy_error") is None:
        legacy = load_model(directory / "legacy" / f"{e.name}.pdmodel")
        legacy.metadata.update(metadata_)
    return ZooModel(e, model, legacy, info.get("legacy_error") or "", directory, info)


def _build(name: str, tmp: Path) -> None:
    """Build ``name`` into ``tmp``: PIR export, then legacy export, each in a child process."""
    from hwdeploy.sdk.isolation import run_probe

    if _paddle_version() == "none":
        raise BackendError(f"building zoo model {name!r} needs Paddle: pip install paddlepaddle")
    # One thread: deterministic reductions, and kind to the other processes on the machine.
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "FLAGS_enable_pir_api": "1"}
    started = time.monotonic()
    result = run_probe("hwdeploy.zoo:_build_pir", [name, str(tmp)], timeout=BUILD_TIMEOUT, env=env)
    if not result.ok:
        raise BackendError(f"building zoo model {name!r} failed: {result.error}\n{result.stderr_tail}")
    info = dict(result.value)
    info["pir_seconds"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    legacy = run_probe("hwdeploy.zoo:_build_legacy", [name, str(tmp)], timeout=BUILD_TIMEOUT,
                       env={**env, "FLAGS_enable_pir_api": "0"})
    info["legacy_seconds"] = round(time.monotonic() - started, 2)
    if legacy.ok:
        info["legacy_error"] = None
    else:
        shutil.rmtree(tmp / "legacy", ignore_errors=True)
        info["legacy_error"] = f"legacy unavailable: {_reason(legacy)}"
    (tmp / "weights.npz").unlink(missing_ok=True)
    info.update(zoo_version=ZOO_VERSION, paddle=_paddle_version(), entry=entry(name).to_dict(),
                built_by_pid=os.getpid(), built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    (tmp / "build.json").write_text(json.dumps(info, indent=1))
    os.chmod(tmp, 0o755)  # mkdtemp made it private; the published entry is an ordinary cache directory


def _reason(result) -> str:
    """The most telling line of a failed child: the Python exception if there is one."""
    lines = [ln.strip() for ln in result.stderr_tail.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line.split(":", 1)[0] or line.startswith(("TypeError", "ValueError", "RuntimeError")):
            return line[:400]
    return result.error[:400]


# ---------------------------------------------------------------------------------------------------
# Everything below runs in the child processes only: it imports Paddle.

def _build_pir(name: str, out_dir: str) -> dict[str, Any]:
    """Child: build ``name`` with deterministic unit-scale weights and export it as PIR; save the weights."""
    import paddle

    started = time.monotonic()
    paddle.set_device("cpu")
    layer, head = _make_layer(name)
    _init_weights(layer, np.random.default_rng(zlib.crc32(name.encode())))
    extra: dict[str, Any] = {}
    if name in TRAINED:
        extra["training"] = _train_digits(layer, Path(out_dir))
        with np.load(Path(out_dir) / "data" / "test.npz") as data:
            calib = [paddle.to_tensor(data["x"][:CALIBRATION_BATCH])]
        scale = {}
    else:
        calib = [paddle.to_tensor(a) for a in sample_inputs(name, CALIBRATION_BATCH, CALIBRATION_SEED)]
        _calibrate_batch_norms(layer, calib)
        if entry(name).task == "detection":  # both heads unit-scale per channel: scores spread around 0.5
            scale = {f"{h}_{k}": v for h in ("cls", "reg")
                     for k, v in _normalise_head(layer.head_only(h), getattr(layer, h), calib, "segmentation").items()}
            # A detector's prior (as RetinaNet and PicoDet initialise it): most cells are background, so the
            # number of boxes above the score threshold varies per image instead of always filling keep_top_k.
            layer.cls.bias.set_value(layer.cls.bias.numpy() - DETECTOR_BACKGROUND_LOGIT)
            scale["cls_background_logit"] = DETECTOR_BACKGROUND_LOGIT
        else:  # models with an output activation (sigmoid, softmax): their logits are made unit-scale
            logits = PreActivation(layer) if hasattr(layer, "logits") else layer
            scale = _normalise_head(logits, head, calib, entry(name).task)
    state = {k: v.numpy() for k, v in layer.state_dict().items()}
    np.savez(Path(out_dir) / "weights.npz", **state)
    _save(layer, name, Path(out_dir) / "pir")
    # NMS outputs have data-dependent shapes (and no float64 kernel): a detector's figure is its score head's.
    sensitive = layer.head_only("cls") if entry(name).task == "detection" else layer
    scale["fp32_vs_fp64_rel_l2"] = _fp32_sensitivity(sensitive, [t[:4] for t in calib])
    return {"params": int(sum(int(np.prod(p.shape)) for p in layer.parameters())), "calibration": scale,
            "pir_build_seconds_in_child": round(time.monotonic() - started, 2), **extra}


def _digits_splits() -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), bilinearly upsampled to 32x32, normalised
    with the training pixels' mean and std, split (fixed seed) into test / calibration / train."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0  # [N, 8, 8] in [0, 1]
    labels = digits.target.astype(np.int64)
    up = _bilinear_matrix(images.shape[1], DIGITS_SIZE)
    images = np.einsum("ij,njk,lk->nil", up, images, up)  # [N, 32, 32]
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    test, rest = order[:DIGITS_TEST], order[DIGITS_TEST:]
    calibration, train = rest[:DIGITS_CALIBRATION], rest
    mean, std = float(images[train].mean()), float(images[train].std())
    x = ((images - mean) / std).astype(np.float32)[:, None]
    return {"x_train": x[train], "y_train": labels[train], "x_test": x[test], "y_test": labels[test],
            "x_calibration": x[calibration], "mean": np.float64(mean), "std": np.float64(std)}


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` linear interpolation weights (align-corners=False, edges clamped)."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    lo = np.clip(np.floor(centres).astype(int), 0, n_in - 1)
    hi = np.clip(lo + 1, 0, n_in - 1)
    frac = np.clip(centres - np.floor(centres), 0.0, 1.0)
    frac = np.where(centres < 0, 0.0, frac)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1.0 - frac
    m[np.arange(n_out), hi] += frac
    return m


def _train_digits(layer, out_dir: Path) -> dict[str, Any]:
    """Child: train ``layer`` on the digits (Adam, cosine decay, fixed seeds, one thread: bit-reproducible);
    write ``data/test.npz`` and ``data/calibration.npz``; return the facts for build.json."""
    import paddle
    import paddle.nn.functional as F
    import sklearn

    started = time.monotonic()
    splits = _digits_splits()
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "data" / "test.npz", x=splits["x_test"], y=splits["y_test"])
    np.savez(out_dir / "data" / "calibration.npz", x=splits["x_calibration"])
    x_train, y_train = splits["x_train"], splits["y_train"]
    rng = np.random.default_rng(DIGITS_SPLIT_SEED + 1)
    steps_per_epoch = len(x_train) // DIGITS_BATCH
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(6e-3, T_max=DIGITS_EPOCHS * steps_per_epoch)
    optimizer = paddle.optimizer.Adam(learning_rate=schedule, parameters=layer.parameters())
    layer.train()
    for _ in range(DIGITS_EPOCHS):
        order = rng.permutation(len(x_train))
        for step in range(steps_per_epoch):
            idx = order[step * DIGITS_BATCH:(step + 1) * DIGITS_BATCH]
            loss = F.cross_entropy(layer(paddle.to_tensor(x_train[idx])), paddle.to_tensor(y_train[idx]))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
    layer.eval()

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        with paddle.no_grad():
            predicted = np.concatenate([layer(paddle.to_tensor(x[i:i + 256])).numpy().argmax(axis=1)
                                        for i in range(0, len(x), 256)])
        return float((predicted == y).mean())

    return {"dataset": "sklearn.datasets.load_digits (8x8, upsampled bilinearly to 32x32)",
            "scikit_learn": sklearn.__version__, "preprocessing": {"scale": 1 / 16.0, "mean": float(splits["mean"]),
                                                                   "std": float(splits["std"])},
            "split_seed": DIGITS_SPLIT_SEED, "train_size": len(x_train), "test_size": len(splits["y_test"]),
            "calibration_size": len(splits["x_calibration"]), "epochs": DIGITS_EPOCHS, "batch": DIGITS_BATCH,
            "fp32_train_accuracy": accuracy(x_train, y_train),
            "fp32_test_accuracy": accuracy(splits["x_test"], splits["y_test"]),
            "train_seconds": round(time.monotonic() - started, 2)}


def _fp32_sensitivity(layer, inputs) -> float:
    """Relative L2 distance of the float32 outputs from float64 ones: the least any fp32 backend can differ by.

    Parity tolerances across different kernels (oneDNN vs native, a device vs
    the CPU) must sit well above this figure.
    """
    import paddle

    _fill_rnn_dropout_state(layer)
    with paddle.no_grad():
        out32 = layer(*inputs).numpy().astype(np.float64)
        layer.to(dtype="float64")
        out64 = layer(*[t.astype("float64") if t.dtype == paddle.float32 else t for t in inputs]).numpy()
    return float(np.linalg.norm(out32 - out64) / np.linalg.norm(out64))


def _build_legacy(name: str, out_dir: str) -> dict[str, Any]:
    """Child (``FLAGS_enable_pir_api=0``): the same layer and weights, exported as a legacy ProgramDesc."""
    import paddle

    paddle.set_device("cpu")
    layer, _ = _make_layer(name)
    with np.load(Path(out_dir) / "weights.npz") as weights:
        layer.set_state_dict({k: paddle.to_tensor(weights[k]) for k in weights.files})
    _fill_rnn_dropout_state(layer)
    layer.eval()
    _save(layer, name, Path(out_dir) / "legacy")
    if not (Path(out_dir) / "legacy" / f"{name}.pdmodel").exists():
        raise RuntimeError("paddle.jit.save wrote no .pdmodel (is FLAGS_enable_pir_api=0 honoured?)")
    return {}


def _fill_rnn_dropout_state(layer) -> None:
    """Give RNN layers an (empty) dropout state: theirs is an uninitialised tensor, which the legacy tracer
    cannot place ("Unknown place type: Place(undefined:0)") and ``Layer.to`` cannot cast. Inference never reads it."""
    import paddle

    for sub in layer.sublayers():
        if isinstance(sub, paddle.nn.layer.rnn.RNNBase):
            sub._dropout_state = paddle.zeros([0], dtype="uint8")


def _save(layer, name: str, directory: Path) -> None:
    import paddle

    specs = [paddle.static.InputSpec([None if d == -1 else d for d in i.shape], i.dtype, i.name)
             for i in entry(name).inputs]
    layer.eval()
    paddle.jit.save(layer, str(directory / name), input_spec=specs)


def _init_weights(layer, rng: np.random.Generator) -> None:
    """He-normal weights, near-identity norms, small random biases, all from ``rng`` in a fixed order."""
    import paddle.nn as nn

    for _, sub in layer.named_sublayers(include_self=True):
        for pname, param in sub.named_parameters(include_sublayers=False):
            shape = tuple(param.shape)
            if isinstance(sub, (nn.layer.norm._BatchNormBase, nn.LayerNorm)):
                value = rng.normal(1.0 if pname == "weight" else 0.0, 0.1, shape)
            elif isinstance(sub, nn.Embedding):
                value = rng.standard_normal(shape)
            elif len(shape) == 1:  # biases
                value = rng.normal(0.0, 0.1, shape)
            elif isinstance(sub, nn.Linear):  # weight [in, out]
                value = rng.normal(0.0, np.sqrt(2.0 / shape[0]), shape)
            elif isinstance(sub, nn.Conv2DTranspose):  # weight [in, out/groups, kh, kw]
                fan_in = shape[0] * shape[2] * shape[3] / float(np.prod(sub._stride))
                value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif isinstance(sub, nn.Conv2D):  # weight [out, in/groups, kh, kw]
                value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
            else:  # recurrent cells: weight [gates*hidden, fan_in]; tanh/sigmoid gates want gain 1
                value = rng.normal(0.0, np.sqrt(1.0 / shape[-1]), shape)
            param.set_value(value.astype(np.float32))


def _calibrate_batch_norms(layer, inputs) -> None:
    """Set every batch norm's running statistics to the statistics of one sample batch.

    With all statistics from real activations, every normalised activation is
    unit-scale however deep the network, in inference (eval) mode too.
    """
    import paddle
    import paddle.nn as nn

    norms = [s for s in layer.sublayers() if isinstance(s, nn.layer.norm._BatchNormBase)]
    if not norms:
        return
    saved = [bn._momentum for bn in norms]
    for bn in norms:
        bn._momentum = 0.0  # running = batch statistics
    layer.train()
    with paddle.no_grad():
        layer(*inputs)
    for bn, momentum in zip(norms, saved):
        bn._momentum = momentum
    layer.eval()


class PreActivation:
    """A model with an output activation (sigmoid, softmax) seen up to its ``logits``: what the head's
    normalisation must scale, since the activation's outputs cannot be unit-scale."""

    def __init__(self, model):
        self.model = model

    def eval(self):
        self.model.eval()

    def __call__(self, *inputs):
        return self.model.logits(*inputs)


def _normalise_head(layer, head, inputs, task: str) -> dict[str, float]:
    """Shift and scale the output layer so outputs have per-channel mean 0 and overall std 1 on ``inputs``.

    Without the shift, pooled classifiers give nearly the same logits for
    every input, and a parity check would mostly compare the bias.
    """
    import paddle

    layer.eval()
    with paddle.no_grad():
        out = layer(*inputs).numpy().astype(np.float64)
    axis = 1 if task == "segmentation" else out.ndim - 1
    moved = np.moveaxis(out, axis, -1).reshape(-1, out.shape[axis])
    mean = moved.mean(axis=0)
    std = float((moved - mean).std())
    spread = float(out.std(axis=0).mean())  # variation across the batch, before the fix
    weight = head.weight.numpy().astype(np.float64)
    bias = head.bias.numpy().astype(np.float64)
    head.weight.set_value((weight / std).astype(np.float32))
    head.bias.set_value(((bias - mean) / std).astype(np.float32))
    return {"raw_output_std": std, "raw_output_abs_mean": float(np.abs(mean).mean()), "raw_batch_spread": spread}


def _make_layer(name: str):
    """``(layer, output_layer)`` for zoo model ``name`` (fresh, in inference mode)."""
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F

    paddle.seed(0)  # Paddle's own init is overwritten, but keep even that deterministic
    if name == "mlp":
        layer = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 8))
        return layer, layer[4]
    if name == "mobilenet_v2":
        layer = paddle.vision.models.mobilenet_v2(pretrained=False, scale=1.0, num_classes=1000)
        return layer, layer.classifier[1]
    if name == "resnet18":
        layer = paddle.vision.models.resnet18(pretrained=False, num_classes=1000)
        return layer, layer.fc

    class EncoderLayer(nn.Layer):
        """Post-norm Transformer encoder layer (as nn.TransformerEncoderLayer with ReLU), written with ``@``:
        nn.MultiHeadAttention calls paddle.matmul, which Paddle 3.3 cannot export to the legacy format."""

        def __init__(self, dim=64, heads=4, ffn=128):
            super().__init__()
            self.heads, self.head_dim = heads, dim // heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.ffn1, self.ffn2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

        def forward(self, x):
            # [N, L, 3*D] -> 3 x [N, heads, L, head_dim]
            qkv = self.qkv(x).reshape([0, 0, 3, self.heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = F.softmax((q * self.head_dim ** -0.5) @ k.transpose([0, 1, 3, 2]), axis=-1)
            mixed = (attn @ v).transpose([0, 2, 1, 3]).reshape([0, 0, self.heads * self.head_dim])
            x = self.norm1(x + self.proj(mixed))
            return self.norm2(x + self.ffn2(F.relu(self.ffn1(x))))

    class TransformerClassifier(nn.Layer):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 64)
            self.pos = nn.Embedding(MAX_SEQ_LEN, 64)
            self.layers = nn.LayerList([EncoderLayer(), EncoderLayer()])
            self.head = nn.Linear(64, 10)

        def forward(self, tokens):
            positions = paddle.arange(tokens.shape[1], dtype="int64").unsqueeze(0)
            x = self.embed(tokens) + self.pos(positions)
            for layer_ in self.layers:
                x = layer_(x)
            return self.head(x.mean(axis=1))

    class GruTagger(nn.Layer):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 32)
            self.gru = nn.GRU(32, 64)
            self.head = nn.Linear(64, 8)

        def forward(self, tokens):
            hidden, _ = self.gru(self.embed(tokens))
            return self.head(hidden)

    def block(cin, cout):
        return nn.Sequential(nn.Conv2D(cin, cout, 3, padding=1, bias_attr=False), nn.BatchNorm2D(cout), nn.ReLU(),
                             nn.Conv2D(cout, cout, 3, padding=1, bias_attr=False), nn.BatchNorm2D(cout), nn.ReLU())

    class UNetSmall(nn.Layer):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2, self.mid = block(3, 16), block(16, 32), block(32, 64)
            # Up-convolutions as in the original U-Net. Not F.interpolate: Paddle 3.3.1 cannot run
            # interpolation ops of a PIR program with oneDNN on ("ConvertPirAttribute2RuntimeAttribute").
            self.up2 = nn.Conv2DTranspose(64, 32, 2, stride=2)
            self.dec2 = block(64, 32)
            self.up1 = nn.Conv2DTranspose(32, 16, 2, stride=2)
            self.dec1 = block(32, 16)
            self.head = nn.Conv2D(16, 4, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(F.max_pool2d(e1, 2))
            m = self.mid(F.max_pool2d(e2, 2))
            d2 = self.dec2(paddle.concat([self.up2(m), e2], axis=1))
            d1 = self.dec1(paddle.concat([self.up1(d2), e1], axis=1))
            return self.head(d1)

    def conv_bn(cin, cout, kernel, stride=1, groups=1, act=None):
        layers = [nn.Conv2D(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias_attr=False),
                  nn.BatchNorm2D(cout)]
        return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)

    class InvertedResidual(nn.Layer):
        """MobileNetV2/V3 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

        def __init__(self, cin, cout, stride, expand, act):
            super().__init__()
            hidden = cin * expand
            self.residual = stride == 1 and cin == cout
            self.body = nn.Sequential(conv_bn(cin, hidden, 1, act=act),
                                      conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act),
                                      conv_bn(hidden, cout, 1))

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class DigitsCNN(nn.Layer):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                conv_bn(1, 16, 3, 2, act=nn.Hardswish),                       # 16x16
                InvertedResidual(16, 16, 1, 2, nn.ReLU6),
                InvertedResidual(16, 24, 2, 3, nn.ReLU6),                     # 8x8
                InvertedResidual(24, 24, 1, 3, nn.Hardswish),
                InvertedResidual(24, 40, 2, 3, nn.Hardswish),                 # 4x4
                conv_bn(40, 96, 1, act=nn.Hardswish))
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.head = nn.Linear(96, 10)

        def forward(self, x):
            return self.head(paddle.flatten(self.pool(self.features(x)), 1))

    class BasicBlock(nn.Layer):
        """ResNet's basic block: two 3x3 conv-BN, ReLU, and a 1x1 projection shortcut when the shape changes."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, cout, 3, stride, act=nn.ReLU), conv_bn(cout, cout, 3))
            self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

        def forward(self, x):
            return F.relu(self.body(x) + (self.shortcut(x) if self.shortcut is not None else x))

    class DigitsResNet(nn.Layer):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv_bn(1, 32, 3, 2, act=nn.ReLU),   # 16x16
                                          BasicBlock(32, 32, 1),
                                          BasicBlock(32, 64, 2),               # 8x8
                                          BasicBlock(64, 128, 2))              # 4x4
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.head = nn.Linear(128, 10)

        def forward(self, x):
            return self.head(paddle.flatten(self.pool(self.features(x)), 1))

    def resize_to(x, like):  # bilinear, to the run-time spatial size of ``like`` (a shape tensor in the program)
        return F.interpolate(x, size=paddle.shape(like)[2:], mode="bilinear", align_corners=False)

    class AttentionFusion(nn.Layer):
        """PP-LiteSeg's UAFM: a coarse map upsampled to the finer one, weighted by a spatial attention computed
        from the channel mean and max of both."""

        def __init__(self, c_low, c_high):
            super().__init__()
            self.low = conv_bn(c_low, c_high, 3, act=nn.ReLU)
            self.attention = nn.Sequential(conv_bn(4, 2, 3, act=nn.ReLU), conv_bn(2, 1, 3))
            self.out = conv_bn(c_high, c_high, 3, act=nn.ReLU)

        def forward(self, low, high):
            low = self.low(low)
            up = resize_to(high, low)
            stats = paddle.concat([up.mean(axis=1, keepdim=True), up.max(axis=1, keepdim=True),
                                   low.mean(axis=1, keepdim=True), low.max(axis=1, keepdim=True)], axis=1)
            att = F.sigmoid(self.attention(stats))
            return self.out(up * att + low * (1 - att))

    class TinySegmenter(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stage1 = conv_bn(3, 16, 3, 2, act=nn.ReLU)     # 1/2
            self.stage2 = conv_bn(16, 32, 3, 2, act=nn.ReLU)    # 1/4
            self.stage3 = conv_bn(32, 64, 3, 2, act=nn.ReLU)    # 1/8
            self.stage4 = conv_bn(64, 96, 3, 2, act=nn.ReLU)    # 1/16
            self.context = conv_bn(96, 64, 1, act=nn.ReLU)
            self.reduce = conv_bn(96, 64, 1, act=nn.ReLU)
            self.fuse8 = AttentionFusion(64, 64)
            self.fuse4 = AttentionFusion(32, 64)
            self.neck = conv_bn(64, 32, 3, act=nn.ReLU)
            self.head = nn.Conv2D(32, SEGMENTER_CLASSES, 1)

        def forward(self, x):
            f4 = self.stage2(self.stage1(x))
            f8 = self.stage3(f4)
            f16 = self.stage4(f8)
            context = resize_to(self.context(F.adaptive_avg_pool2d(f16, 1)), f16) + self.reduce(f16)
            y = self.fuse4(f4, self.fuse8(f8, context))
            return resize_to(self.head(self.neck(y)), x)

    class HeadOnly(nn.Layer):
        """A detector up to one raw head (no decoding, no NMS): what calibration and fp64 sensitivity see."""

        def __init__(self, detector, head):
            super().__init__()
            self.detector, self.head = detector, head

        def forward(self, image, scale_factor=None):
            return self.head(self.detector.features(image))

    class TinyDetector(nn.Layer):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.ReLU),    # 32x32
                                          conv_bn(16, 32, 3, 2, act=nn.ReLU),   # 16x16
                                          conv_bn(32, 32, 3, 2, act=nn.ReLU))   # 8x8 cells, stride 8
            self.cls = nn.Conv2D(32, DETECTOR_CLASSES, 1)
            self.reg = nn.Conv2D(32, 4, 1)  # distances to the left, top, right, bottom edge, in strides
            self.head = self.cls

        def head_only(self, name):
            return HeadOnly(self, getattr(self, name))

        def forward(self, image, scale_factor):
            f = self.features(image)
            cells = f.shape[2] * f.shape[3]
            stride = DETECTOR_SIZE / f.shape[3]
            ys, xs = paddle.meshgrid(paddle.arange(f.shape[2], dtype="float32"),
                                     paddle.arange(f.shape[3], dtype="float32"))
            cx, cy = (xs + 0.5) * stride, (ys + 0.5) * stride
            d = paddle.exp(self.reg(f).clip(-3.0, 3.0)) * stride  # [N, 4, H, W]
            boxes = paddle.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], axis=-1)
            boxes = boxes.reshape([-1, cells, 4])
            # Back to the original image: scale_factor is [scale_y, scale_x], as PaddleDetection's preprocessors give.
            sy, sx = scale_factor[:, 0:1], scale_factor[:, 1:2]
            boxes = boxes / paddle.concat([sx, sy, sx, sy], axis=-1).unsqueeze(1)
            scores = F.sigmoid(self.cls(f)).reshape([-1, DETECTOR_CLASSES, cells])
            n = DETECTOR_NMS
            bbox, _index, bbox_num = paddle._C_ops.multiclass_nms3(
                boxes, scores, None, n["score_threshold"], n["nms_top_k"], n["keep_top_k"], n["nms_threshold"],
                True, 1.0, n["background_label"])  # normalized=True: IoU without the +1 of pixel boxes
            return bbox, bbox_num

    class TinyDetectorRaw(TinyDetector):
        def __init__(self):
            super().__init__()
            self.reg = nn.Conv2D(32, 4 * (DETECTOR_REG_MAX + 1), 1)  # per edge, logits over the distance bins

        def forward(self, image):
            f = self.features(image)
            h, w = f.shape[2], f.shape[3]
            stride = DETECTOR_SIZE / w
            ys, xs = paddle.meshgrid(paddle.arange(h, dtype="float32"), paddle.arange(w, dtype="float32"))
            cx, cy = ((xs + 0.5) * stride).reshape([-1]), ((ys + 0.5) * stride).reshape([-1])
            bins = self.reg(f).reshape([0, 4, DETECTOR_REG_MAX + 1, h * w]).transpose([0, 3, 1, 2])
            d = paddle.matmul(F.softmax(bins, axis=-1), paddle.arange(DETECTOR_REG_MAX + 1, dtype="float32"))
            d = d * stride  # [N, cells, 4]: the expected distance of each edge
            boxes = paddle.stack([cx - d[:, :, 0], cy - d[:, :, 1], cx + d[:, :, 2], cy + d[:, :, 3]], axis=-1)
            scores = F.sigmoid(self.cls(f)).reshape([0, DETECTOR_CLASSES, h * w]).transpose([0, 2, 1])
            return paddle.concat([boxes, scores], axis=-1)

    class SqueezeExcite(nn.Layer):
        """SE as PP-LCNet writes it: channel weights from the global average, through a bottleneck, hardsigmoid."""

        def __init__(self, channels, reduction=4):
            super().__init__()
            self.gate = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Conv2D(channels, channels // reduction, 1),
                                      nn.ReLU(), nn.Conv2D(channels // reduction, channels, 1), nn.Hardsigmoid())

        def forward(self, x):
            return x * self.gate(x)

    def depthwise_separable(cin, cout, kernel, stride, se=False):
        dw = conv_bn(cin, cin, kernel, stride, groups=cin, act=nn.Hardswish)
        return nn.Sequential(dw, *([SqueezeExcite(cin)] if se else []), conv_bn(cin, cout, 1, act=nn.Hardswish))

    class LCNetSmall(nn.Layer):
        def __init__(self):
            super().__init__()
            # (kernel, in, out, stride, SE): PP-LCNet's table at scale 0.25, the 5x5 middle run shortened
            blocks = [(3, 8, 16, 1, False), (3, 16, 32, 2, False), (3, 32, 32, 1, False), (3, 32, 64, 2, False),
                      (3, 64, 64, 1, False), (3, 64, 128, 2, False), (5, 128, 128, 1, False),
                      (5, 128, 128, 1, False), (5, 128, 256, 2, True), (5, 256, 256, 1, True)]
            self.features = nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.Hardswish),
                                          *[depthwise_separable(ci, co, k, s, se) for k, ci, co, s, se in blocks])
            self.expand = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Conv2D(256, 512, 1), nn.Hardswish(),
                                        nn.Dropout(0.2, mode="downscale_in_infer"))
            self.head = nn.Linear(512, 1000)

        def forward(self, x):
            return self.head(paddle.flatten(self.expand(self.features(x)), 1))

    def channel_shuffle(x, groups=2):  # ShuffleNet's shuffle: [N, g, C/g, H, W] -> swap g and C/g -> [N, C, H, W]
        _, c, h, w = x.shape
        return x.reshape([0, groups, c // groups, h, w]).transpose([0, 2, 1, 3, 4]).reshape([0, c, h, w])

    class ShuffleUnit(nn.Layer):
        """ShuffleNetV2's unit: stride 1 splits the channels and transforms one half; stride 2 transforms both."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.stride = stride
            branch_in = cin if stride == 2 else cin // 2
            half = cout // 2
            self.branch = nn.Sequential(conv_bn(branch_in, half, 1, act=nn.ReLU),
                                        conv_bn(half, half, 3, stride, groups=half),
                                        conv_bn(half, half, 1, act=nn.ReLU))
            self.shortcut = (nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, half, 1, act=nn.ReLU))
                             if stride == 2 else None)

        def forward(self, x):
            if self.stride == 1:
                kept, changed = paddle.split(x, 2, axis=1)
                out = paddle.concat([kept, self.branch(changed)], axis=1)
            else:
                out = paddle.concat([self.shortcut(x), self.branch(x)], axis=1)
            return channel_shuffle(out)

    class ShuffleNetSmall(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 24, 3, 2, act=nn.ReLU), nn.MaxPool2D(3, 2, 1))   # 56x56
            units, cin = [], 24
            for cout in (48, 96, 192):                                                          # 28, 14, 7
                units += [ShuffleUnit(cin, cout, 2), ShuffleUnit(cout, cout, 1)]
                cin = cout
            self.units = nn.Sequential(*units)
            self.last = conv_bn(192, 512, 1, act=nn.ReLU)
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.head = nn.Linear(512, 1000)

        def forward(self, x):
            return self.head(paddle.flatten(self.pool(self.last(self.units(self.stem(x)))), 1))

    def upsample(x, factor):  # DB's FPN: F.upsample(..., mode="nearest") by a constant factor
        return F.upsample(x, scale_factor=factor, mode="nearest", align_mode=1)

    class OcrDetector(nn.Layer):
        """DB: backbone levels 1/4..1/32, DBFPN, DBHead (the shrink map only, as PP-OCR's inference export)."""

        def __init__(self):
            super().__init__()
            widths = (16, 24, 32, 48)
            self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish)                               # 1/2
            self.levels = nn.LayerList([conv_bn(ci, co, 3, 2, act=nn.Hardswish)
                                        for ci, co in zip((16,) + widths[:-1], widths)])   # 1/4 .. 1/32
            self.lateral = nn.LayerList([nn.Conv2D(c, 32, 1, bias_attr=False) for c in widths])
            self.smooth = nn.LayerList([nn.Conv2D(32, 8, 3, padding=1, bias_attr=False) for _ in widths])
            self.head_body = nn.Sequential(conv_bn(32, 8, 3, act=nn.ReLU),
                                           nn.Conv2DTranspose(8, 8, 2, stride=2), nn.BatchNorm2D(8), nn.ReLU())
            self.head = nn.Conv2DTranspose(8, 1, 2, stride=2)

        def logits(self, x):
            features, f = [], self.stem(x)
            for level in self.levels:
                f = level(f)
                features.append(f)
            c2, c3, c4, c5 = [lat(f) for lat, f in zip(self.lateral, features)]
            p4 = c4 + upsample(c5, 2)
            p3 = c3 + upsample(p4, 2)
            p2 = c2 + upsample(p3, 2)
            s2, s3, s4, s5 = [sm(p) for sm, p in zip(self.smooth, (p2, p3, p4, c5))]
            fused = paddle.concat([upsample(s5, 8), upsample(s4, 4), upsample(s3, 2), s2], axis=1)
            return self.head(self.head_body(fused))

        def forward(self, x):
            return F.sigmoid(self.logits(x))

    class OcrRecognizer(nn.Layer):
        """CRNN's convolutional body, the columns as a sequence, SVTR's global mixing, a CTC head."""

        def __init__(self):
            super().__init__()
            stages, cin = [], 3
            for cout, pool in ((16, 2), (32, 2), (48, (2, 1)), (64, (2, 1)), (64, (2, 1))):  # 32x100 -> 1x25
                stages += [conv_bn(cin, cout, 3, act=nn.ReLU), nn.MaxPool2D(pool, pool)]
                cin = cout
            self.body = nn.Sequential(*stages)
            self.mixing = EncoderLayer(dim=64, heads=4, ffn=128)
            self.head = nn.Linear(64, OCR_CHARSET + 1)

        def logits(self, x):
            columns = self.body(x).squeeze(2).transpose([0, 2, 1])  # [N, C, 1, W] -> [N, W, C]
            return self.head(self.mixing(columns))

        def forward(self, x):
            return F.softmax(self.logits(x), axis=-1)

    makers = {"transformer_encoder": TransformerClassifier, "gru_text": GruTagger, "unet_small": UNetSmall,
              "digits_cnn": DigitsCNN, "digits_resnet": DigitsResNet, "tiny_detector": TinyDetector,
              "tiny_segmenter": TinySegmenter, "tiny_detector_raw": TinyDetectorRaw,
              "lcnet_small": LCNetSmall, "shufflenet_small": ShuffleNetSmall,
              "ocr_detector": OcrDetector, "ocr_recognizer": OcrRecognizer}
    if name not in makers:
        entry(name)  # raises with the list of names
        raise AssertionError(f"zoo entry {name!r} has no builder")
    layer = makers[name]()
    layer.eval()
    return layer, layer.head
