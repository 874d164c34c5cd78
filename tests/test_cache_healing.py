"""Caches verify and heal: a damaged entry (flipped byte, truncation, deleted file, garbled probe result) is
rebuilt and logged, never served and never a permanent error; racing builders publish one clean entry."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

import hwdeploy
from hwdeploy.sdk import cache
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.testing import install_plugin, plugins_on_path

COPYING_TARGET = """
from hwdeploy import Artifact, ConversionTarget, hookimpl

BUILDS = []

@hookimpl
def hwdeploy_conversion_targets():
    return [ConversionTarget("copy", "the program file, copied")]

@hookimpl
def hwdeploy_convert_model(model, target, options, output_dir):
    if target != "copy":
        return None
    BUILDS.append(model.name)
    (output_dir / "program.bin").write_bytes(model.program.read_bytes())
    return Artifact("copy", output_dir, ["program.bin"])
"""


@pytest.fixture()
def copy_target(tmp_path, monkeypatch):
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    install_plugin(tmp_path / "site", "copier", COPYING_TARGET)
    with plugins_on_path(tmp_path / "site"):
        import hwdeploy_test_copier

        yield hwdeploy_test_copier.BUILDS


def _flip_byte(path, offset=10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete-artifact-json", "garble-artifact-json"])
def test_a_damaged_conversion_is_rebuilt_not_served(copy_target, tiny_mlp, damage, caplog):
    first = hwdeploy.convert(tiny_mlp, "copy")
    original = first.path().read_bytes()
    assert not first.cached and hwdeploy.convert(tiny_mlp, "copy").cached and len(copy_target) == 1
    cache._verified.clear()  # as in a new process
    if damage == "flip":
        _flip_byte(first.path())
    elif damage == "truncate":
        first.path().write_bytes(original[:7])
    elif damage == "delete-artifact-json":
        (first.directory / "artifact.json").unlink()
    else:
        (first.directory / "artifact.json").write_text('{"target": "copy", "files": ')
    with caplog.at_level(logging.WARNING, logger="hwdeploy"):
        again = hwdeploy.convert(tiny_mlp, "copy")
    assert not again.cached and len(copy_target) == 2  # built again...
    assert again.path().read_bytes() == original  # ...and what is served is right
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert hwdeploy.convert(tiny_mlp, "copy").cached  # and healthy from then on


def test_a_garbled_probe_result_is_probed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path))
    first = run_probe("os:getcwd", cache_ttl=3600)
    [path] = (tmp_path / "probes").glob("*.json")
    from hwdeploy.sdk import isolation

    isolation._memory_cache.clear()
    path.write_text(path.read_text().replace(first.value, "/garbled"))
    again = run_probe("os:getcwd", cache_ttl=3600)
    assert again.ok and again.value == first.value


def test_a_zoo_model_with_a_flipped_byte_is_rebuilt(tmp_path):
    env = dict(os.environ, HWDEPLOY_CACHE_DIR=str(tmp_path))
    code = "from hwdeploy import zoo; import sys; m = zoo.get('mlp').model; print(m.params); print(m.sha256)"
    built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert built.returncode == 0, built.stderr
    params, sha = built.stdout.split()
    _flip_byte(__import__("pathlib").Path(params), offset=100)
    healed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert healed.returncode == 0, healed.stderr
    assert healed.stdout.split() == [params, sha]  # the same deterministic model, rebuilt
    assert "damaged" in healed.stderr


def test_racing_builders_publish_one_clean_entry(tmp_path):
    final = tmp_path / "entry"
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from hwdeploy.sdk.cache import build_once
        def build(tmp):
            time.sleep(0.5)
            (tmp / "data.bin").write_bytes(os.urandom(1 << 16))
        print(build_once(Path({str(final)!r}), build)[1])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    built = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert built.count("True") == 1  # one published, the others saw it (or lost the rename race)
    assert cache.entry_problem(final) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no temporary or damaged leftovers
    assert json.loads((final / cache.MANIFEST).read_text())["files"]["data.bin"]["size"] == 1 << 16


def test_a_one_file_entry_that_became_a_directory_is_replaced(tmp_path):
    """Found by the fault campaign: a probe result replaced by a directory made every later write raise."""
    path = tmp_path / "probe.json"
    path.mkdir()
    (path / "junk").write_text("x")
    cache.write_verified_file(path, "answer")  # publishes over it
    assert cache.read_verified_file(path) == "answer"
    path.unlink()
    path.mkdir()
    assert cache.read_verified_file(path) is None and not path.exists()  # damaged: ignored and removed
