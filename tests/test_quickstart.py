"""The README's Quick start, `.ci/run` and tox.ini agree: what a newcomer types is what CI runs.

CI itself runs `.ci/run` (with a throw-away HOME and a fresh hwdeploy cache), so it proves the commands
work; these checks keep the README and tox.ini from drifting away from that script.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Quick start has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_uses_explicit_interpreters():
    """No bare `pip`/`python`/`tox`: whatever is on PATH may be the system interpreter (externally managed)."""
    commands = _quickstart_commands()
    assert len(commands) == 2
    for command in commands:
        for part in re.split(r"&&|\|\||;|\|", command):
            words = shlex.split(part)
            if not words:
                continue
            program = words[0]
            assert program not in {"pip", "pip3", "python", "tox", "pytest", "hwdeploy"}, command
            if program.endswith(("pip", "tox", "hwdeploy", "pytest")) or program.startswith("python3"):
                assert program.startswith(".venv/bin/") or words[1:3] == ["-m", "venv"], command


def test_command_2_is_the_script_ci_runs_and_it_runs_tox():
    assert _quickstart_commands()[1] == "bash .ci/run"
    script = (ROOT / ".ci" / "run").read_text()
    # The README's test command: tox's envlist, one env at a time, each env's venv removed after it ran (disk).
    assert re.search(r"^\s+\.ci-venv/bin/tox \"\$@\"$", script, re.M)  # arguments: one tox call as given
    loop = re.search(r"^envs=\$\(\.ci-venv/bin/python -c '(.+)'\)$", script, re.M)
    assert loop, "the env loop reads tox.ini's envlist"
    envs = subprocess.run([sys.executable, "-c", loop.group(1)], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.split()
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    assert envs == [e.strip() for e in ini["tox"]["envlist"].split(",")] and len(envs) >= 6
    assert 'for env in $envs; do\n    .ci-venv/bin/tox -e "$env"' in script and 'rm -rf ".tox/$env"' in script
    assert "mktemp -d" in script and "export HOME=" in script  # throw-away HOME
    assert "rm -rf .tox/hwdeploy-cache" in script  # fresh hwdeploy cache


def test_tox_passes_through_what_package_clients_and_toolchains_need():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    patterns = [p.strip() for p in ini["testenv"]["passenv"].replace("\n", ",").split(",") if p.strip()]
    needed = ["HOME", "CI", "PYENV_ROOT", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
              "PIP_CERT", "PIP_INDEX_URL", "PIP_CONFIG_FILE", "NPM_CONFIG_USERCONFIG", "npm_config_cafile",
              "HTTPS_PROXY", "https_proxy", "NO_PROXY", "UV_INDEX_URL", "HWDEPLOY_CHROMIUM"]
    missing = [name for name in needed if not any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    assert not missing, f"tox.ini [testenv] passenv drops {missing}"
    for env in ini.sections():
        assert "passenv" not in ini[env] or env == "testenv", f"[{env}] overrides passenv"
