"""Finding the CPython 3.10 the Lite venv is built from: every candidate is run before it is chosen.

The search looks under ``$PYENV_ROOT``, then ``~/.pyenv``, then ``python3.10`` on PATH. A pyenv shim
for a version that is not pyenv's global one is on PATH but exits 127 ("pyenv: python3.10: command
not found"): it must be skipped, and if nothing works the error names every candidate and why.
The shims and broken interpreters below are small scripts; the working one is this machine's 3.10.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hwdeploy.errors import BackendError
from hwdeploy_arm import env

SHIM = """#!/bin/sh
echo "pyenv: python3.10: command not found" >&2
echo "The \\`python3.10' command exists in these Python versions:" >&2
exit 127
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture(scope="module")
def real_python310() -> str:
    """A CPython 3.10 that runs (found by the search under the real environment)."""
    search = env.search_base_python()
    if search.chosen is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no working CPython 3.10 here: {search.explain()}")
    return search.chosen


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """An empty HOME, PYENV_ROOT and cache: the test decides every candidate there is."""
    home, pyenv_root = tmp_path / "home", tmp_path / "pyenv"
    home.mkdir()
    pyenv_root.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYENV_ROOT", str(pyenv_root))
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(env.ENV_VAR, raising=False)
    return home, pyenv_root


def test_a_pyenv_shim_that_exits_127_is_skipped(real_python310, isolated, monkeypatch, tmp_path):
    shim = _script(tmp_path / "shims" / "python3.10", SHIM)
    real = tmp_path / "bin" / "python3.10"
    real.parent.mkdir()
    real.symlink_to(real_python310)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{real.parent}{os.pathsep}/usr/bin:/bin")

    search = env.search_base_python()
    assert search.chosen == str(real)
    assert search.rejected == ((str(shim), "exit 127: pyenv: python3.10: command not found"),)
    assert env.find_base_python() == str(real)


def test_pyenv_root_then_home_pyenv_then_path(real_python310, isolated, monkeypatch, tmp_path):
    home, pyenv_root = isolated
    on_path = tmp_path / "bin" / "python3.10"
    on_path.parent.mkdir()
    on_path.symlink_to(real_python310)
    monkeypatch.setenv("PATH", f"{on_path.parent}{os.pathsep}/usr/bin:/bin")
    assert env.find_base_python() == str(on_path)

    in_home = home / ".pyenv" / "versions" / "3.10.97" / "bin" / "python"
    in_home.parent.mkdir(parents=True)
    in_home.symlink_to(real_python310)
    assert env.find_base_python() == str(in_home)

    in_root = pyenv_root / "versions" / "3.10.98" / "bin" / "python"
    in_root.parent.mkdir(parents=True)
    in_root.symlink_to(real_python310)
    assert env.find_base_python() == str(in_root)


def test_when_nothing_works_the_error_lists_each_candidate_and_why(isolated, monkeypatch, tmp_path):
    home, pyenv_root = isolated
    wrong = _script(pyenv_root / "versions" / "3.10.99" / "bin" / "python", "#!/bin/sh\necho '(3, 11)'\n")
    hangs = _script(home / ".pyenv" / "versions" / "3.10.1" / "bin" / "python", "#!/bin/sh\nexec sleep 30\n")
    shim = _script(tmp_path / "shims" / "python3.10", SHIM)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setattr(env, "PROBE_TIMEOUT", 1.0)

    assert env.find_base_python() is None
    with pytest.raises(BackendError, match="no working CPython 3.10 found") as info:
        env.setup_lite_env()
    message = str(info.value)
    assert f"{wrong} (reports Python 3.11, not 3.10)" in message
    assert f"{hangs} (did not answer within 1s)" in message
    assert f"{shim} (exit 127: pyenv: python3.10: command not found)" in message
    assert message.index(str(wrong)) < message.index(str(hangs)) < message.index(str(shim))  # search order
    assert not env.managed_env_dir().exists()  # no venv was attempted


def test_an_explicit_base_python_is_run_first(isolated, tmp_path):
    shim = _script(tmp_path / "shims" / "python3.10", SHIM)
    with pytest.raises(BackendError, match=r"with .*python3\.10: exit 127: pyenv: python3.10: command not found"):
        env.setup_lite_env(str(shim))
    assert not env.managed_env_dir().exists()


def test_no_candidate_at_all_says_where_it_looked(isolated, monkeypatch):
    home, pyenv_root = isolated
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BackendError) as info:
        env.setup_lite_env()
    assert f"{pyenv_root}/versions/3.10.*/bin" in str(info.value)
    assert f"{home}/.pyenv/versions/3.10.*/bin" in str(info.value) and "PATH" in str(info.value)
