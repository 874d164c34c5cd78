"""``python -m hwdeploy_customdevice.simulated gcu --visible-env TOPS_VISIBLE_DEVICES``: build, print the root."""

from __future__ import annotations

import argparse
import time

from hwdeploy_customdevice.simulated import build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hwdeploy_customdevice.simulated",
                                     description="Build the simulated CustomDevice (cached); print CUSTOM_DEVICE_ROOT.")
    parser.add_argument("types", nargs="*", default=["npu"], help="device types to build (default: npu)")
    parser.add_argument("--visible-env", help="the vendor's visible-devices variable (default: <TYPE>_VISIBLE_DEVICES)")
    args = parser.parse_args(argv)
    for kind in args.types:
        started = time.monotonic()
        print(kind, build(kind, visible_env=args.visible_env), f"{time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
