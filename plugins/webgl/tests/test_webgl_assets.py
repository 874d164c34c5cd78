"""The Paddle.js install honours this machine's npm configuration (no browser, no network).

A machine whose registry is reachable only through a mirror or a TLS-intercepting proxy says so in
npm's own configuration: the global ``<npm prefix>/etc/npmrc`` (Debian: ``/usr/etc/npmrc``, e.g. a
``cafile``), the user's ``~/.npmrc`` or ``$NPM_CONFIG_USERCONFIG``. ``assets.install`` must run npm
so that these apply. Here each config level points npm at a local fake registry; the install must
ask *that* registry for the pinned packages. (``npm install --prefix DIR`` reads its global config
from ``DIR/etc/npmrc`` instead, so the "global" case fails with it.)
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading

import pytest

from hwdeploy_webgl import assets

NPM = shutil.which("npm")


@pytest.fixture
def fake_registry():
    """A registry on 127.0.0.1 that answers 404 to everything and records what it was asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            asked.append(self.path)
            body = b'{"error":"not found"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def npm_machine(monkeypatch, tmp_path):
    """An isolated npm set-up: its own global prefix, user config and cache; no npm_config_* from outside."""
    assert NPM, "npm not found on PATH: apt-get install -y npm"
    for name in list(os.environ):
        if name.lower().startswith("npm_config_"):
            monkeypatch.delenv(name)
    prefix = tmp_path / "machine-prefix"  # npm reads its global config from <prefix>/etc/npmrc
    (prefix / "etc").mkdir(parents=True)
    user = tmp_path / "user-npmrc"
    user.write_text("")
    monkeypatch.setenv("NPM_CONFIG_PREFIX", str(prefix))
    monkeypatch.setenv("NPM_CONFIG_USERCONFIG", str(user))
    monkeypatch.setenv("NPM_CONFIG_CACHE", str(tmp_path / "npm-cache"))  # cold: nothing served offline
    return {"global": prefix / "etc" / "npmrc", "user": user}


@pytest.mark.parametrize("level", ["global", "user"])
def test_install_uses_the_registry_npm_is_configured_with(level, npm_machine, fake_registry, tmp_path):
    registry, asked = fake_registry
    npm_machine[level].write_text(f"registry={registry}\nfetch-retries=0\nnoproxy=127.0.0.1,localhost\n")
    root = tmp_path / "pjs"
    with pytest.raises(assets.AssetsError, match="npm install .* failed") as info:
        assets.install(root, npm=NPM, timeout=120)
    assert any("paddlejs" in path for path in asked), (
        f"npm never asked the registry of the {level} npm config ({registry}); it said: {info.value}")
    assert registry.rstrip("/") in str(info.value) or "404" in str(info.value)
    assert not root.exists()  # a failed install leaves nothing that a later run trusts
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pjs.")]


def test_install_command_has_no_prefix_option():
    """`--prefix` (or `-C`, or `--global`) would replace the machine's global npm config; npm runs in the folder."""
    cmd = assets.npm_install_command("npm", ["@paddlejs/paddlejs-core@2.2.0"])
    assert cmd[:2] == ["npm", "install"]
    assert not {"--prefix", "-C", "-g", "--global", "--globalconfig", "--userconfig"} & set(cmd)
    assert not any(arg.startswith(("--prefix=", "--registry", "--cafile")) for arg in cmd)

