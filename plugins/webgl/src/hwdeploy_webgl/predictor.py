"""The WebGL predictor: a Paddle.js model on its own page of a headless Chromium."""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import numpy as np

import hwdeploy
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError, InputError, OptionError
from hwdeploy.contract.model import Model, TensorSpec
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.receipt import OpPlacement, Receipt
from hwdeploy.contract.records import Artifact

from hwdeploy_webgl import assets, browser, host
from hwdeploy_webgl.converter import EMBEDDING_FILE, HOST_ONLY_OPS, HOST_REASON
from hwdeploy_webgl.plugin import BACKEND, KIND as TARGET, OPTIONS, check_input_shape
from hwdeploy_webgl.probe import SOFTWARE_RE

log = logging.getLogger("hwdeploy.webgl")

EMBEDDING_REASON = "host: the integer ids are looked up before the page (Paddle.js computes float32 only)"


def validate_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every option of :data:`hwdeploy_webgl.plugin.OPTIONS`, checked, with defaults."""
    settings = OPTIONS.check(options)
    check_input_shape(OPTIONS.owner, settings["input_shape"])
    if not all(isinstance(a, str) for a in settings["chromium_args"] or []):
        raise OptionError(f"{OPTIONS.owner}: chromium_args must be a list of strings")
    return settings


class WebGLPredictor(Predictor):
    """Runs a converted model with Paddle.js' WebGL backend in Chromium.

    The model is converted (and cached) by ``hwdeploy.convert(model, "webgl")``
    with a static batch (option ``batch``, default 1); a larger batch given to
    :meth:`run` is split into runs of that size, which is exact for models that
    treat samples independently (every inference model without cross-batch ops).
    """

    backend = BACKEND
    thread_safe = True  # every call goes through the page session's lock, on the browser's own thread

    def __init__(self, model: Model, device: Device, options: dict[str, Any], *, artifact: Artifact | None = None,
                 bundles: dict[str, bytes] | None = None):
        self.model = model
        self.device = device
        settings = validate_options(options)
        self.options = dict(options)
        self.check_finite = settings["check_finite"]
        self.allow_software = settings["allow_software_renderer"]
        self._session = None
        executable = browser.find_chromium(settings["chromium"])
        if not executable:
            raise BackendError("Chromium not found: apt-get install chromium (Debian), or set $HWDEPLOY_CHROMIUM"
                               " or the option chromium=PATH")
        self._executable = executable
        self._args = browser.chromium_args(list(settings["chromium_args"] or []))
        self._bundles = bundles or assets.load()
        if artifact is None:
            from hwdeploy_webgl.converter import CONVERTER_REVISION

            convert_options = {k: options[k] for k in ("batch", "input_shape") if k in options}
            artifact = hwdeploy.convert(model, TARGET, **convert_options)
            if artifact.metadata.get("converter_revision") != CONVERTER_REVISION:  # cached by an older converter
                artifact = hwdeploy.convert(model, TARGET, refresh=True, **convert_options)
        self._artifact = artifact
        meta = artifact.metadata
        self._input, self._output = meta["input"], meta["output"]
        # A model fed through an embedding: the ids are looked up on the host, the page gets their rows.
        self._embedding = self._input.get("embedding")
        self._table = np.load(artifact.path(EMBEDDING_FILE), allow_pickle=False) if self._embedding else None
        self._files = {f"m/{name}": artifact.path(name).read_bytes() for name in artifact.files
                       if name != EMBEDDING_FILE}
        in_shape = list(self._input["shape"])
        self._batch = self._input.get("batch")  # None: the model's batch is fixed
        out_shape = list(self._output["shape"])
        self._host = meta.get("host")  # the ops that run on the host after the page (hwdeploy_webgl.host)
        self._split_batch = self._batch is not None and (
            self._host["batched"] if self._host else self._output.get("dynamic_batch", False))
        if self._split_batch:
            in_shape[0] = out_shape[0] = -1
        rows = (0, self._embedding["rows"]) if self._embedding else None
        self.inputs = [TensorSpec(self._input["name"], tuple(in_shape), self._input.get("dtype", "float32"), rows)]
        self.outputs = [TensorSpec(self._output["name"], tuple(out_shape), "float32")]
        if self._host:
            self.inputs += [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in self._host["inputs"]]
            self.outputs = [TensorSpec(f["name"], tuple(f["shape"]), f["dtype"]) for f in self._host["fetch"]]
        self._session = browser.Session(executable, self._args, self._bundles, self._files,
                                        timeout=float(settings["timeout"]))
        self._session_id = self._session.host.session_id
        try:
            self._info = self._session.load(browser.BASE_URL + "m/")
            self._check_page()
        except BaseException:
            self.close()
            raise

    def _check_page(self) -> None:
        info = self._info
        gl = info.get("gl") or {}
        if info.get("broken"):
            raise BackendError(f"Paddle.js could not build shader programs for: {sorted(set(info['broken']))}")
        if info.get("context_lost"):
            raise BackendError("the WebGL context was lost while loading the model")
        if not gl.get("webgl2") or not gl.get("float_framebuffer"):
            raise BackendError(f"WebGL renderer {gl.get('renderer')!r} lacks WebGL2 float render targets"
                               " (EXT_color_buffer_float): Paddle.js would fall back to lossy 8/16-bit textures")

    @property
    def browser_session_id(self) -> str:
        """Marks this predictor's Chromium processes (``browser.session_processes(id)`` lists them)."""
        return self._session_id

    @property
    def renderer(self) -> str:
        """The renderer of the WebGL context the model runs in (UNMASKED_RENDERER_WEBGL)."""
        return (self._info.get("gl") or {}).get("renderer", "")

    @property
    def software_renderer(self) -> bool:
        return bool(SOFTWARE_RE.search(self.renderer))

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        if self._session is None:
            raise BackendError("the predictor is closed")
        if self._embedding:
            x = self._look_up(x)
        var_shape = self._output["var_shape"]
        size = math.prod(var_shape)
        if not self._split_batch:
            outs = [self._finish(self._session.predict(x), size, self._output["shape"])]
        else:
            b = self._batch
            if x.shape[0] % b:
                raise InputError(f"input {self._input['name']!r}: batch {x.shape[0]} is not a multiple of {b}, the"
                                 f" batch this model was converted with (option batch={b})")
            outs = [self._finish(self._session.predict(x[i:i + b]), size, self._output["shape"])
                    for i in range(0, x.shape[0], b)]
        if self._host:
            return self._run_host_stage(outs, inputs)
        return [outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)]

    def _look_up(self, ids: np.ndarray) -> np.ndarray:
        """The embedding rows of ``ids`` (checked in [0, rows) by the input check; the padding row reads 0)."""
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._table)):  # never index out of the table
            raise InputError(f"input {self._input['name']!r}: ids must lie in [0, {len(self._table)})")
        return host.embedding_rows(self._table, ids, self._embedding["padding_idx"])

    def _run_host_stage(self, page_outputs: list[np.ndarray], inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Unpack the exports from each page run (one per batch slice) and run the host stage on all of them."""
        for spec, array in zip(self.inputs[1:], inputs[1:]):
            if self._split_batch and array.shape[:1] != inputs[0].shape[:1]:
                raise InputError(f"input {spec.name!r}: batch {array.shape[0]}, but {self.inputs[0].name!r} has"
                                 f" {inputs[0].shape[0]}")
        exports: list[list[np.ndarray]] = [[] for _ in self._host["exports"]]
        for flat in page_outputs:
            offset = 0
            for slot, spec in zip(exports, self._host["exports"]):
                slot.append(flat.reshape(-1)[offset:offset + spec["size"]].reshape(spec["shape"]))
                offset += spec["size"]
        joined = [parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0) for parts in exports]
        return host.run(self._host, joined, inputs[1:])

    @staticmethod
    def _finish(flat: np.ndarray, size: int, shape) -> np.ndarray:
        if flat.size < size:
            raise BackendError(f"Paddle.js returned {flat.size} values, expected {size}")
        return flat[:size].reshape(shape).copy()

    def _receipt(self) -> Receipt:
        gl = self._info.get("gl") or {}
        host = self._session.host if self._session else None
        receipt = Receipt(
            requested=self.device.id, actual=self.device.id, backend=BACKEND,
            runtime_versions={"chromium": getattr(host, "version", ""), "playwright": browser.playwright_version(),
                              **assets.versions()},
            options={k: v for k, v in self.options.items() if isinstance(v, (str, int, float, bool, list))},
            ops=[OpPlacement(op, self.device.id, n) for op, n in sorted(Counter(self._info.get("ops", [])).items())],
            ops_known=True,
        )
        if self._embedding:
            receipt.ops.append(OpPlacement("pd_op.embedding", "cpu:0", 1, EMBEDDING_REASON))
        if self._host:  # the host stage: listed as run on the host CPU, so the policy sees it as off-device
            for op, n in self._host["op_counts"].items():
                receipt.ops.append(OpPlacement(op, "cpu:0", n, HOST_ONLY_OPS.get(op, HOST_REASON)))
            receipt.evidence.append(f"host stage after the page: {sum(self._host['op_counts'].values())} op(s) run by"
                                    " hwdeploy with numpy on the host CPU (hwdeploy_webgl.host), reading"
                                    f" {len(self._host['exports'])} tensor(s) the page returns"
                                    + (f" and the input(s) {[i['name'] for i in self._host['inputs']]}"
                                       if self._host["inputs"] else ""))
        receipt.evidence.append(f"UNMASKED_RENDERER_WEBGL of the model's own WebGL context: {gl.get('renderer')!r}"
                                f" (vendor {gl.get('vendor')!r}, {gl.get('version')})")
        receipt.evidence.append(f"WebGL2={gl.get('webgl2')}, EXT_color_buffer_float={gl.get('color_buffer_float')},"
                                f" RGBA32F framebuffer complete={gl.get('float_framebuffer')},"
                                f" MAX_TEXTURE_SIZE={gl.get('max_texture_size')}")
        receipt.evidence.append("Paddle.js has no CPU kernels: every op above is a WebGL fragment shader")
        if self.software_renderer:
            why = (f"the WebGL renderer is a software rasterizer ({self.renderer}): the shaders run on the CPU,"
                   " not a GPU")
            if self.allow_software:
                receipt.evidence.append(why + "; accepted (allow_software_renderer=True)")
            else:
                receipt.fallback_evidence.append(why + " (pass allow_software_renderer=True to accept it)")
        return receipt

    def _clone(self) -> "WebGLPredictor":
        # A page of its own (Playwright pages are not shareable between threads' calls); weights re-upload.
        return WebGLPredictor(self.model, self.device, self.options, artifact=self._artifact, bundles=self._bundles)

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
