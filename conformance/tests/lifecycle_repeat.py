"""Run the real ``lifecycle`` check N times in a row in one worker process (one Paddle import, not N).

    python lifecycle_repeat.py SPEC.json N OUT.json

SPEC is what :meth:`hwdeploy_conformance.runner.Conformance.worker_spec` gives for the case. The worker's
own setup runs (device discovery, model, reference, the device predictor), then
:func:`hwdeploy_conformance.worker.check_lifecycle` N times; OUT gets the N outcomes.
"""

import json
import sys
from dataclasses import asdict

from hwdeploy_conformance import worker


def main(spec_path: str, runs: str, out_path: str) -> int:
    with open(spec_path) as fh:
        case = worker.Case(json.load(fh))
    case.setup()
    case.dev = case.create_device_predictor()
    outcomes = [asdict(worker.check_lifecycle(case)) for _ in range(int(runs))]
    case.close()
    with open(out_path, "w") as fh:
        json.dump(outcomes, fh, default=worker.json_default)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
