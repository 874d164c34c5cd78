"""hwdeploy.sdk.paddle_kernels on a real Paddle CPU predictor: the kernel program is captured and parsed.

Paddle runs in child processes (the dump depends on what the process's Paddle ran before, see
``register_dump_site``); the parent parses the captured text itself, so the parser is tested on Paddle's
real output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hwdeploy.sdk.paddle_kernels import BANNER, KernelRecord, parse_kernel_program

pytestmark = pytest.mark.slow

# Creates one predictor per oneDNN setting and captures its first and second run. With "paddle-first", a plain
# paddle.inference predictor runs before hwdeploy imports Paddle, as in a user's process that used Paddle first.
CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from hwdeploy.contract.model import load_model
    from hwdeploy.contract.records import Device
    from hwdeploy.sdk import paddle_inference as pi, paddle_kernels

    model = load_model(sys.argv[1])
    x = np.random.default_rng(0).standard_normal((2, 8)).astype("float32")
    if sys.argv[2] == "paddle-first":
        from paddle import inference
        plain = inference.create_predictor(inference.Config(str(model.program), str(model.params)))
        plain.get_input_handle(plain.get_input_names()[0]).copy_from_cpu(x)
        plain.run()
    report = {}
    for onednn in (False, True):
        make = lambda: pi.make_config(model, threads=1, onednn=onednn, optim_cache=False)
        predictor = pi.PaddleInferencePredictor(model, Device("cpu", 0), make())
        uncaptured = pi.PaddleInferencePredictor(model, Device("cpu", 0), make())
        with paddle_kernels.capture_kernel_program() as first:
            y = predictor.run(x)[0]
        with paddle_kernels.capture_kernel_program() as second:
            predictor.run(x)
        report["onednn" if onednn else "plain"] = {
            "first_text": first.text, "first_records": None if first.records is None else len(first.records),
            "second_text": second.text, "same_outputs": bool(np.array_equal(y, uncaptured.run(x)[0]))}
    print("\\x1e" + json.dumps(report))
""")


def _capture(model_dir, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), mode], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.rpartition("\x1e")[2])


@pytest.fixture(scope="module")
def captured(tiny_mlp) -> dict:
    return _capture(tiny_mlp, "hwdeploy-first")


def test_first_run_prints_the_kernel_program_with_each_kernels_backend(captured):
    plain = captured["plain"]
    assert BANNER in plain["first_text"]
    records = parse_kernel_program(plain["first_text"])
    # tiny MLP: Linear -> ReLU -> Linear, every kernel on the host CPU (the input's "data" has no backend yet)
    assert records == [KernelRecord("pd_op.data", "data", "Undefined", "float32"),
                       KernelRecord("pd_op.matmul", "matmul", "CPU", "float32"),
                       KernelRecord("pd_op.add_", "add", "CPU", "float32"),
                       KernelRecord("pd_op.relu_", "relu", "CPU", "float32"),
                       KernelRecord("pd_op.matmul", "matmul", "CPU", "float32"),
                       KernelRecord("pd_op.add_", "add", "CPU", "float32")]
    assert [r.on_host for r in records] == [False] + [True] * 5
    assert plain["first_records"] == len(records)  # capture_kernel_program parsed the same
    assert plain["same_outputs"]  # capturing changes nothing in the results


def test_onednn_kernels_are_parsed_too(captured):
    # oneDNN kernels print as "onednn_kernel.phi_kernel": the kernel name is only in kernel_name.
    records = parse_kernel_program(captured["onednn"]["first_text"])
    assert [(r.op, r.kernel, r.backend) for r in records if r.kernel == "fc"] == [
        ("onednn_op.fc", "fc", "ONEDNN"), ("onednn_op.fc", "fc", "ONEDNN")]
    assert all(r.on_host for r in records if r.kernel != "data")
    assert captured["onednn"]["same_outputs"]


def test_later_runs_print_nothing(captured):
    # The program is printed when it is built (first run); a later capture holds no dump at all.
    for setting in ("plain", "onednn"):
        assert parse_kernel_program(captured[setting]["second_text"]) is None


def test_without_the_early_registration_paddle_never_prints_it(tiny_mlp):
    """Why inference_module registers the dump site at import: after Paddle's interpreter has run once in a
    process, glog has bound the site, and switching the dump on later prints nothing."""
    late = _capture(tiny_mlp, "paddle-first")
    for setting in ("plain", "onednn"):
        assert BANNER not in late[setting]["first_text"]
        assert late[setting]["first_records"] is None


def test_text_without_a_dump_is_none_and_non_kernel_lines_are_skipped():
    assert parse_kernel_program("I1201 pir_interpreter.cc:1606] New Executor is Running ...") is None
    banner_only = f"===== {BANNER} =====\n{{\n    (%0) = \"builtin.parameter\" () {{}} : () -> cpu_tensor<4xf32>\n}}\n"
    assert parse_kernel_program(banner_only) == []
