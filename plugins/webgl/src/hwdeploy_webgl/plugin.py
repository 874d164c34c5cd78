"""hwdeploy hooks of the WebGL plugin (entry point ``webgl``). Cheap to import: no Playwright, no browser."""

from __future__ import annotations

import logging
import os
from typing import Any

from hwdeploy import Artifact, CliCommand, ConversionTarget, Device, hookimpl
from hwdeploy.errors import ConversionError, OptionError
from hwdeploy.sdk.options import CHECK_FINITE, Option, OptionSchema

log = logging.getLogger("hwdeploy.webgl")

KIND = "webgl"
BACKEND = "paddle.js-webgl"
PRIORITY = -10  # a browser backend: never chosen by device="auto"
PROBE_TTL = 24 * 3600.0
BATCH = Option("batch", int, 1, "static batch of the converted model (a larger run() batch is split into runs)",
               minimum=1, maximum=4096, nullable=False)
INPUT_SHAPE = Option("input_shape", (list, tuple), None, "fixed input shape, for programs with dynamic axes")
CONVERT_OPTIONS = OptionSchema("webgl conversion", [
    BATCH, INPUT_SHAPE,
    Option("chunk_mb", (int, float), 4, "size of each weight chunk file, MB", minimum=0.0001, maximum=1024,
           nullable=False),
    Option("size_limit_mb", (int, float), None, "refuse a converted model larger than this, MB", minimum=0.001),
])
OPTIONS = OptionSchema("webgl backend", [
    BATCH, INPUT_SHAPE,
    Option("allow_software_renderer", bool, False, "run on SwiftShader/llvmpipe (a software rasteriser: the CPU)",
           nullable=False),
    Option("timeout", (int, float), 120.0, "seconds a browser call may take", minimum=0.001, maximum=86400,
           nullable=False),
    Option("chromium", str, None, "Chromium executable (default: $HWDEPLOY_CHROMIUM, then Debian's chromium)"),
    Option("chromium_args", (list, tuple), None, "extra Chromium command-line flags (strings)"),
    CHECK_FINITE,
    Option("precision", str, "fp32", "fp32 only: half-float textures lose ~1e-3", choices=("fp32",),
           nullable=False),
])


def check_input_shape(owner: str, input_shape: Any) -> None:
    if input_shape is not None and not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                           for d in input_shape):
        raise OptionError(f"{owner}: input_shape must be a list of positive ints, got {input_shape!r}")


@hookimpl
def hwdeploy_option_schemas() -> list[OptionSchema]:
    return [OPTIONS, CONVERT_OPTIONS]


def _device(available: bool, reason: str = "", name: str = "WebGL (Paddle.js in headless Chromium)",
            versions: dict | None = None, details: dict | None = None) -> Device:
    return Device(KIND, 0, name=name, backend=BACKEND, available=available, reason=reason, priority=PRIORITY,
                  versions=versions or {}, details=details or {})


@hookimpl
def hwdeploy_discover_devices() -> list[Device]:
    import importlib.util

    from hwdeploy.sdk.isolation import run_probe

    from hwdeploy_webgl import assets, browser

    if importlib.util.find_spec("playwright") is None:
        return [_device(False, "the Python package 'playwright' is not installed: pip install playwright"
                               " (no browser download: the system Chromium is used)")]
    executable = browser.find_chromium()
    if not executable:
        return [_device(False, "Chromium not found: apt-get install chromium (Debian), or set"
                               f" ${browser.ENV_CHROMIUM} to its path")]
    versions = {"playwright": browser.playwright_version(), **assets.versions()}
    missing = assets.problems()
    if missing:
        return [_device(False, "Paddle.js runtime not installed or not verified (" + "; ".join(missing)
                        + f"): {assets.SETUP_HINT}", versions=versions)]
    args = browser.chromium_args()
    try:
        stamp = f"{os.path.realpath(executable)}:{os.stat(os.path.realpath(executable)).st_mtime_ns}"
    except OSError:
        stamp = executable
    probe = run_probe("hwdeploy_webgl.probe:probe_webgl", [executable, args, stamp], timeout=60,
                      cache_ttl=PROBE_TTL, cache_env=[browser.ENV_CHROMIUM, browser.ENV_ARGS, "DISPLAY"])
    if not probe.ok:
        return [_device(False, f"Chromium {executable} could not be probed for WebGL: {probe.error}",
                        versions=versions)]
    info = probe.value
    versions["chromium"] = info.get("chromium", "")
    details = {k: info.get(k) for k in ("renderer", "vendor", "version", "webgl2", "color_buffer_float",
                                        "float_framebuffer", "max_texture_size", "software")}
    details["software_renderer"] = details.pop("software")
    details["executable"] = executable
    renderer = info.get("renderer") or "unknown renderer"
    name = f"WebGL2: {renderer}" + (" (software rasterizer: runs on the CPU)" if details["software_renderer"] else "")
    if not info.get("webgl2"):
        return [_device(False, f"Chromium offers no WebGL2 context ({renderer}); check GPU drivers or"
                               f" ${browser.ENV_ARGS} (e.g. --use-angle=vulkan)", name, versions, details)]
    if not info.get("float_framebuffer"):
        return [_device(False, f"{renderer} cannot render to float32 textures (EXT_color_buffer_float):"
                               " Paddle.js would lose precision", name, versions, details)]
    device = _device(True, "", name, versions, details)
    # SwiftShader/llvmpipe run the shaders on the CPU: say so, so no one expects a GPU's timing signature (the
    # receipt still reports it as a fallback unless allow_software_renderer=True).
    device.host_compute = bool(details["software_renderer"])
    return [device]


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    return [ConversionTarget(KIND, "Paddle.js model (model.json + float32 weight chunks) for Paddle.js' WebGL"
                                   " backend in a browser", device_kinds=(KIND,))]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir) -> Artifact | None:
    if target != KIND:
        return None
    from hwdeploy_webgl import assets, converter

    settings = CONVERT_OPTIONS.check(options)
    batch, input_shape = settings["batch"], settings["input_shape"]
    check_input_shape(CONVERT_OPTIONS.owner, input_shape)
    if model.format != "pir":
        raise ConversionError(f"{model.program.name}: the webgl converter reads Paddle 3 PIR programs (.json);"
                              " re-export the model with paddle.jit.save on Paddle 3")
    converted = converter.lower(model.program, model.params, batch=batch,
                                input_shape=list(input_shape) if input_shape is not None else None)
    chunk = int(float(settings["chunk_mb"]) * 1024 * 1024)
    written = converter.write(converted, output_dir, chunk_bytes=chunk)
    size = written["size"]
    limit = settings["size_limit_mb"]
    if limit is not None and size["total_bytes"] > float(limit) * 1e6:
        raise ConversionError(f"{model.name}: the Paddle.js model is {size['total_bytes'] / 1e6:.2f} MB, over"
                              f" size_limit_mb={limit}")
    if not size["within_guidance"]:
        log.warning("hwdeploy webgl: %s: %s", model.name, size["note"])
    ops = [op["type"] for op in converted.model["ops"] if op["type"] not in ("feed", "fetch")]
    meta = {
        "input": converted.input, "output": converted.output, "size": size,
        "ops": dict(sorted(_count(ops).items())), "op_count": len(ops),
        "pir_ops": dict(sorted(converted.pir_ops.items())), "passes": dict(sorted(converted.passes.items())),
        "paddlejs": assets.versions(), "batch": batch, "converter_revision": converter.CONVERTER_REVISION,
    }
    if converted.host is not None:
        meta["host"] = converted.host
    return Artifact(KIND, output_dir, written["files"], meta)


def _count(items):
    from collections import Counter

    return Counter(items)


@hookimpl
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.kind != KIND or device.backend != BACKEND:
        return None
    from hwdeploy_webgl.predictor import WebGLPredictor

    return WebGLPredictor(model, device, options)


def _configure_setup(parser) -> None:
    parser.add_argument("--force", action="store_true", help="reinstall even if a verified install exists")
    parser.add_argument("--dir", default=None, help="install here instead of hwdeploy's cache"
                                                     " (then point $HWDEPLOY_PADDLEJS_DIR at it)")


def _run_setup(args) -> int:
    from hwdeploy_webgl import assets

    try:
        root = assets.install(args.dir, force=args.force)
    except assets.AssetsError as exc:
        print(f"webgl-setup failed: {exc}")
        return 1
    for bundle in assets.BUNDLES:
        print(f"{bundle.package}@{bundle.version}  sha256 {bundle.sha256}  ok")
    print(f"installed in {root}")
    return 0


@hookimpl
def hwdeploy_cli_commands() -> list[CliCommand]:
    return [CliCommand("webgl-setup", "install the pinned Paddle.js runtime (npm registry) and verify its sha256",
                       _configure_setup, _run_setup)]
