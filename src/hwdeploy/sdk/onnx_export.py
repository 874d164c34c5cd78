"""Paddle -> ONNX with paddle2onnx: the shared step of every plugin whose runtime reads ONNX.

paddle2onnx imports Paddle and may abort or ``sys.exit`` its process, so
:func:`paddle2onnx_in_child` is meant to be called inside a function that the
plugin runs through :func:`hwdeploy.sdk.isolation.run_probe`. Importing this
module imports neither Paddle nor paddle2onnx.
"""

from __future__ import annotations

from hwdeploy.errors import ConversionError
from hwdeploy.sdk.hostinfo import dist_version

DEFAULT_OPSET = 13


def check_opset(opset) -> None:
    """Raise :class:`ConversionError` unless ``opset`` is an ONNX opset paddle2onnx can target (7..23)."""
    if not isinstance(opset, int) or isinstance(opset, bool) or not 7 <= opset <= 23:
        raise ConversionError(f"opset must be an integer between 7 and 23, got {opset!r}")


def converter_missing(purpose: str) -> str:
    """Why paddle2onnx cannot convert here ("" when it can); ``purpose`` ends the first reason ("to ONNX")."""
    if not dist_version("paddle2onnx"):
        return f"paddle2onnx is not installed: it converts Paddle models {purpose} (pip install paddle2onnx)"
    if not dist_version("paddlepaddle", "paddlepaddle-gpu"):
        return ("paddlepaddle is not installed: paddle2onnx needs it to read Paddle models"
                " (pip install 'hwdeploy[paddle]')")
    return ""


def paddle2onnx_in_child(program: str, params: str, output: str, opset: int) -> str:
    """Export ``program``/``params`` to the ONNX file ``output``; return paddle2onnx's version.

    Call it only in a child process. A failed conversion raises RuntimeError with
    paddle2onnx's first error line.
    """
    import contextlib
    import io

    import paddle2onnx

    printed = io.StringIO()  # paddle2onnx prints its errors and calls sys.exit(-1)
    try:
        with contextlib.redirect_stdout(printed):
            paddle2onnx.export(program, params, output, opset_version=opset, auto_upgrade_opset=True,
                               enable_onnx_checker=True, enable_optimize=True)
    except SystemExit:
        errors = [line.split("\t", 1)[-1].replace("\x1b[0m", "").strip()
                  for line in printed.getvalue().splitlines() if "[ERROR]" in line]
        raise RuntimeError(errors[0] if errors else "paddle2onnx exited without converting") from None
    return paddle2onnx.__version__
