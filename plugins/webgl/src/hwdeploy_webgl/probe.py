"""Discovery probe, run in a subprocess (hwdeploy.sdk.isolation.run_probe): what WebGL does Chromium offer?"""

from __future__ import annotations

import re
from typing import Any

SOFTWARE_RE = re.compile(r"SwiftShader|llvmpipe|softpipe|Software|Basic Render|Microsoft Basic", re.I)

_PROBE_PAGE = "<!doctype html><html><body><canvas></canvas></body></html>"


def probe_webgl(executable: str, args: list[str], stamp: str = "") -> dict[str, Any]:
    """Launch Chromium headless, create a WebGL2 context, report renderer and float-texture support.

    ``stamp`` (executable path + mtime) only keys the discovery cache: a new Chromium is probed again.
    """
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    harness = (Path(__file__).parent / "harness.js").read_text()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=args,
                                    handle_sigint=False, handle_sigterm=False, handle_sighup=False)
        try:
            page = browser.new_page()
            page.set_content(_PROBE_PAGE)
            page.add_script_tag(content=harness)
            info = page.evaluate("() => window.hwdeploy.probe()")
            info["chromium"] = browser.version
        finally:
            browser.close()
    return info
