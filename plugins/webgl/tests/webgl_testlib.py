"""Helpers of the webgl tests (a uniquely named module: several conftest.py files share the repository)."""

import time

import numpy as np

import hwdeploy
from webgl_model_inputs import INPUTS


def model_input(name: str, batch: int = 2, seed: int = 0) -> np.ndarray:
    shape = [batch if d == -1 else d for d in INPUTS[name]]
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def cpu_reference(model, *inputs):
    # oneDNN off: Paddle 3.3.1's oneDNN path cannot run PIR interpolation ops (ConvertPirAttribute2RuntimeAttribute)
    with hwdeploy.predictor(model, device="cpu", threads=1, onednn=False) as ref:
        return ref.run(*inputs)


def assert_parity(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-4) -> None:
    """fp32 parity: elementwise rtol, with an absolute floor relative to the output's scale."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert np.isfinite(out).all(), "non-finite outputs"
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * max(scale, 1e-6))


def wait_gone(session_id: str, timeout: float = 10.0) -> list[int]:
    """PIDs of the session's Chromium processes still alive after ``timeout`` seconds (empty: all gone)."""
    from hwdeploy_webgl.browser import session_processes

    deadline = time.monotonic() + timeout
    alive = session_processes(session_id)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = session_processes(session_id)
    return alive
