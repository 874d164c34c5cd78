"""hwdeploy plugin: Paddle models on Paddle.js (WebGL) in a headless Chromium.

- conversion target ``webgl``: PIR program -> Paddle.js model (:mod:`hwdeploy_webgl.converter`);
- device ``webgl:0`` (priority -10: ``device="auto"`` never picks it);
- ``hwdeploy webgl-setup`` installs the pinned Paddle.js packages from npm.

Importing this package is cheap: Playwright and the browser start on first use.
"""

__version__ = "0.1.0"
