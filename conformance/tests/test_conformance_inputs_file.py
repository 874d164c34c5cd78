"""Real inputs for a model under test: ``--inputs [MODEL=]FILE.npz``, ``[models.M] inputs_file``, or
``inputs.npz`` beside a model given by path. Checked in the parent (a bad file is a setup error before any
worker starts), hashed into the report, and drawn by parity as the ``sample`` distribution."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hwdeploy.contract.records import TensorSpec
from hwdeploy_conformance.inputs import InputCase, InputMaker, InputsFileError, file_sampler, load_inputs_file

SPECS = [TensorSpec("x", (-1, 16), "float32"), TensorSpec("ids", (-1, 12), "int64", (0, 50))]


def write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def good(n=5):
    rng = np.random.default_rng(0)
    return {"x": rng.uniform(3, 4, (n, 16)).astype(np.float32), "ids": rng.integers(0, 50, (n, 12))}


def test_arrays_by_name_or_in_order(tmp_path):
    arrays = good()
    by_name = load_inputs_file(write(tmp_path / "a.npz", **arrays), SPECS)
    in_order = load_inputs_file(write(tmp_path / "b.npz", arr_0=arrays["x"], arr_1=arrays["ids"]), SPECS)
    for a, b, want in zip(by_name, in_order, (arrays["x"], arrays["ids"])):
        np.testing.assert_array_equal(a, want)
        np.testing.assert_array_equal(b, want)
    assert by_name[1].dtype == np.int64


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("ids"), "the model's inputs are ['x', 'ids']"),
    (lambda a: a.update(x=a["x"][:3]), "the same number of samples"),
    (lambda a: a.update(x=a["x"][:, :8]), "dimension 1 is 8, the model's input has 16"),
    (lambda a: a.update(x=a["x"][:, :, None]), "3 dimensions, the model's input has 2"),
    (lambda a: a["x"].__setitem__((0, 0), np.nan), "holds NaN or Inf"),
    (lambda a: a.update(ids=a["ids"].astype(np.float64)), "float64 values do not fit the model's int64 input"),
    (lambda a: a["ids"].__setitem__((0, 0), 50), "outside the valid ids [0, 50)"),
    (lambda a: a["ids"].__setitem__((0, 0), -1), "outside the valid ids [0, 50)"),
    (lambda a: a.update(x=np.zeros((0, 16), np.float32), ids=np.zeros((0, 12), np.int64)), "at least one"),
])
def test_a_file_that_does_not_fit_the_model_is_refused_with_the_reason(tmp_path, change, message):
    arrays = good()
    change(arrays)
    with pytest.raises(InputsFileError, match=re.escape(message)):
        load_inputs_file(write(tmp_path / "bad.npz", **arrays), SPECS)


def test_what_is_not_an_npz_of_plain_arrays_is_refused(tmp_path, monkeypatch):
    with pytest.raises(InputsFileError, match="cannot read"):
        load_inputs_file(str(tmp_path / "missing.npz"), SPECS)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputsFileError, match="not a readable .npz"):
        load_inputs_file(str(tmp_path / "junk.npz"), SPECS)
    np.save(tmp_path / "one.npy", good()["x"])
    with pytest.raises(InputsFileError, match="not an .npz archive"):
        load_inputs_file(str(tmp_path / "one.npy"), SPECS)
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}] * 5, dtype=object), ids=good()["ids"])
    with pytest.raises(InputsFileError, match="Object arrays cannot be loaded"):  # never unpickled
        load_inputs_file(str(tmp_path / "pickled.npz"), SPECS)
    monkeypatch.setattr("hwdeploy_conformance.inputs.MAX_INPUTS_FILE_BYTES", 100)
    with pytest.raises(InputsFileError, match="more than the"):
        load_inputs_file(write(tmp_path / "big.npz", **good()), SPECS)


def test_the_sampler_draws_file_rows_and_the_other_distributions_match_them(tmp_path):
    arrays = load_inputs_file(write(tmp_path / "a.npz", **good(6)), SPECS)
    sample = file_sampler(arrays)
    x, ids = sample(4, seed=1)
    assert all(any(np.array_equal(row, r) for r in arrays[0]) for row in x)  # real rows, not made up
    assert len({r.tobytes() for r in x}) == 4  # no repeats while the file has enough rows
    assert sample(9, seed=2)[0].shape == (9, 16)  # more than the file holds: drawn with replacement
    maker = InputMaker(SPECS, (1, 4), sample)
    assert maker.distributions == ["sample", "normal", "uniform"]
    for seed in range(5):
        ux, uids = maker.make(InputCase(4, "uniform", seed))
        nx, _ = maker.make(InputCase(4, "normal", seed))
        assert 3 <= ux.min() and ux.max() <= 4  # the file's range, not [-1, 1]
        assert 3 <= nx.min() and nx.max() <= 4  # a never-negative sample bounds normal draws too
        assert 0 <= uids.min() and uids.max() < 50


@pytest.mark.slow
def test_inputs_beside_a_model_or_named_reach_parity_and_the_report(models, fault_env, tmp_path):
    from hwdeploy_conformance import Conformance, build_report
    from hwdeploy_conformance.config import ConfigError

    model = tmp_path / "seqreg"
    shutil.copytree(models["seqreg"], model)
    rng = np.random.default_rng(5)
    ids = rng.integers(40, 50, (7, 12))  # ids the random draws (0..15 by default) never reach
    np.savez(model / "inputs.npz", ids=ids)
    run = Conformance("cpu", [str(model)], config=fault_env["config"], only=["reference", "parity"])
    run.run()
    report = build_report(run)
    info = report["models"][0]
    assert info["inputs_file"] == str((model / "inputs.npz").resolve()) and info["inputs_file_samples"] == 7
    import hashlib

    assert info["inputs_file_sha256"] == hashlib.sha256((model / "inputs.npz").read_bytes()).hexdigest()
    parity = {c["check"]: c for c in report["checks"]}["parity"]
    assert parity["status"] == "passed", parity["message"]
    assert "sample" in {i["distribution"] for i in parity["figures"]["inputs"]}
    # Named on the command line, the file wins over the one beside the model; a bad one stops the run.
    other = tmp_path / "other.npz"
    np.savez(other, arr_0=ids[:2])
    run = Conformance("cpu", [str(model)], config=fault_env["config"], only=["parity"],
                      inputs={"seqreg": str(other)})
    run.resolve()
    assert run.models[0].inputs_file == str(other.resolve()) and run.models[0].inputs_file_samples == 2
    np.savez(other, arr_0=ids[:, :5])
    with pytest.raises(ConfigError, match="model seqreg: .*other.npz: input 'ids': dimension 1 is 5"):
        Conformance("cpu", [str(model)], only=["parity"], inputs={"": str(other)}).resolve()
    with pytest.raises(ConfigError, match="not under test"):
        Conformance("cpu", [str(model)], only=["parity"], inputs={"mlp": str(other)}).resolve()


@pytest.mark.slow
def test_a_bad_inputs_file_exits_2_before_any_worker(models, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, wrong=np.zeros((2, 16), np.float32))
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "hwdeploy_conformance", "--device", "cpu", "--models",
                           str(models["mlp"]), "--inputs", str(bad), "--report", str(report), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert "holds ['wrong']; the model's inputs are ['x']" in data["error"] and data["checks"] == []
