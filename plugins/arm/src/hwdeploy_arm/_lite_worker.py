"""The Paddle Lite worker process. Runs under the Lite interpreter (CPython <= 3.10), never in the host.

Started by :class:`hwdeploy_arm.worker.LiteWorker` as ``python _lite_worker.py``. It reads one JSON
request per line on stdin and writes one JSON reply per line on the *original* stdout; file
descriptor 1 is then pointed at stderr, so whatever Lite prints (glog, opt's tables) goes to the
log the host keeps, never into the protocol. Tensors cross through two memory-mapped files the host
names (``/dev/shm`` when it exists): inputs are read in place, outputs written once.

Lite reports errors by aborting the process (SIGABRT / SIGSEGV); the host turns that into an error
with the last log lines. Anything this script can check first (dtypes, files) it checks.

``python _lite_worker.py check MODEL PARAMS TARGETS`` is a one-shot mode: opt's
``check_if_model_supported`` always ends the process (exit 1 when supported, abort when not), so it
gets a process of its own.

Only the standard library, numpy and paddlelite are imported; keep this file Python 3.7 compatible.
"""

import json
import mmap
import os
import platform
import sys
import time

PROTOCOL = 1
# numpy dtypes Tensor.from_numpy accepts; anything else (float16...) makes Lite abort.
FROM_NUMPY_DTYPES = ("bool", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")
POWER_MODES = ("high", "low", "full", "no_bind", "rand_high", "rand_low")


class SharedFile:
    """A file mapped into memory, remapped when the other side grows it."""

    def __init__(self, path):
        self.path = path
        self.size = 0
        self.map = None
        self.fh = None

    def ensure(self, size, grow=False):
        if self.fh is None:
            self.fh = open(self.path, "r+b")
        if grow and os.fstat(self.fh.fileno()).st_size < size:
            self.fh.truncate(size)
        if self.map is None or self.size != max(size, 1):
            if self.map is not None:
                self.map.close()
            self.size = max(size, 1)
            self.map = mmap.mmap(self.fh.fileno(), self.size)
        return self.map


def runtime_info():
    """What this Lite runtime is and can run (also the discovery probe: ``_lite_worker:runtime_info``)."""
    import paddlelite
    import paddlelite.lite as lite

    pkg_dir = os.path.dirname(paddlelite.__file__)
    libs_dir = os.path.join(pkg_dir, "libs")
    libs = sorted(os.listdir(libs_dir)) if os.path.isdir(libs_dir) else []
    return {
        "protocol": PROTOCOL,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "lite_version": lite.Opt().version(),
        "package_dir": pkg_dir,
        "libs": libs,
        # The PyPI wheels are built without NNAdapter and OpenCL: their .nb kernels cannot run here.
        "nnadapter": any(name.startswith("libnnadapter") for name in libs),
        "opencl": any("opencl" in name.lower() for name in libs),
        "mobile_config_threads": hasattr(lite.MobileConfig, "set_threads"),
    }


class Worker:
    def __init__(self):
        import numpy as np
        import paddlelite.lite as lite

        self.np = np
        self.lite = lite
        self.predictors = {}
        self.next_handle = 1
        self.shm_in = None
        self.shm_out = None

    # ------------------------------------------------------------------ info
    def cmd_hello(self, req):
        self.shm_in = SharedFile(req["shm_in"])
        self.shm_out = SharedFile(req["shm_out"])
        return runtime_info()

    # ------------------------------------------------------------------ predictors
    def cmd_load(self, req):
        nb = req["nb"]
        if not os.path.isfile(nb):
            raise FileNotFoundError("no such .nb file: %s" % nb)
        config = self.lite.MobileConfig()
        config.set_model_from_file(nb)
        applied = {}
        threads = req.get("threads")
        if threads and hasattr(config, "set_threads"):  # ARM builds only; x86 uses MKL/OMP threads (env)
            config.set_threads(int(threads))
            applied["threads"] = int(threads)
        mode = req.get("power_mode")
        if mode:
            if mode not in POWER_MODES:
                raise ValueError("unknown power mode %r; known: %s" % (mode, ", ".join(POWER_MODES)))
            if hasattr(config, "set_power_mode"):
                config.set_power_mode(getattr(self.lite.PowerMode, "LITE_POWER_" + mode.upper()))
                applied["power_mode"] = mode
        if req.get("nnadapter_devices"):  # subgraphs for an NPU: the runtime must know which driver to use
            config.set_nnadapter_device_names(list(req["nnadapter_devices"]))
            applied["nnadapter_devices"] = list(req["nnadapter_devices"])
        started = time.perf_counter()
        predictor = self.lite.create_paddle_predictor(config)
        handle = self.next_handle
        self.next_handle += 1
        self.predictors[handle] = predictor
        return {"handle": handle, "inputs": list(predictor.get_input_names()),
                "outputs": list(predictor.get_output_names()), "version": predictor.get_version(),
                "applied": applied, "load_seconds": time.perf_counter() - started}

    def cmd_unload(self, req):
        self.predictors.pop(req["handle"], None)
        return {}

    def cmd_run(self, req):
        np = self.np
        predictor = self.predictors[req["handle"]]
        in_map = self.shm_in.ensure(req["in_size"])
        for index, spec in enumerate(req["inputs"]):
            if spec["dtype"] not in FROM_NUMPY_DTYPES:
                raise TypeError("Paddle Lite cannot take %s input tensors (input %d); supported: %s"
                                % (spec["dtype"], index, ", ".join(FROM_NUMPY_DTYPES)))
            array = np.ndarray(tuple(spec["shape"]), spec["dtype"], buffer=in_map, offset=spec["offset"])
            predictor.get_input(index).from_numpy(array)
        started = time.perf_counter()
        predictor.run()
        seconds = time.perf_counter() - started
        outputs = [predictor.get_output(i).numpy() for i in range(len(predictor.get_output_names()))]
        specs, offset = [], 0
        for array in outputs:
            specs.append({"offset": offset, "dtype": str(array.dtype), "shape": list(array.shape)})
            offset += (array.nbytes + 63) // 64 * 64
        size = self.shm_out.size
        if offset > size:
            size = max(offset, 2 * size, 1 << 16)
        out_map = self.shm_out.ensure(size, grow=True)
        for array, spec in zip(outputs, specs):
            view = np.ndarray(array.shape, array.dtype, buffer=out_map, offset=spec["offset"])
            view[...] = array
        return {"outputs": specs, "out_size": size, "run_seconds": seconds}

    # ------------------------------------------------------------------ conversion
    def cmd_opt(self, req):
        opt = self.lite.Opt()
        opt.set_model_file(req["model_file"])
        opt.set_param_file(req["param_file"])
        opt.set_valid_places(req["valid_targets"])
        opt.set_model_type("naive_buffer")
        opt.set_optimize_out(req["out_prefix"])
        started = time.perf_counter()
        opt.run()
        seconds = time.perf_counter() - started
        nb = req["out_prefix"] + ".nb"
        if not os.path.isfile(nb):
            raise RuntimeError("opt finished but wrote no %s" % nb)
        result = {"nb": nb, "opt_seconds": seconds}
        if req.get("visualize_dir"):
            if not os.path.isdir(req["visualize_dir"]):  # opt aborts on a missing directory
                os.makedirs(req["visualize_dir"])
            blocks = opt.visualize_optimized_nb_model(nb, req["visualize_dir"].rstrip("/") + "/")
            result["blocks"] = list(blocks)
        return result

    def cmd_ping(self, req):
        return {"pid": os.getpid()}

    def cmd_crash(self, req):  # for tests of the host's crash handling: a real abort, like Lite's
        os.abort()


def serve():
    protocol_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # C/C++ stdout (opt's tables, printf) -> stderr, the log
    sys.stdout = sys.stderr
    worker = None
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        command = request.get("cmd")
        if command == "exit":
            break
        try:
            if worker is None:
                worker = Worker()
            handler = getattr(worker, "cmd_" + str(command), None)
            if handler is None:
                raise ValueError("unknown worker command %r" % command)
            reply = {"ok": True, "result": handler(request)}
        except Exception as exc:  # a Python-level error: the worker stays up
            reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
        sys.stderr.flush()
        protocol_out.write(json.dumps(reply) + "\n")
        protocol_out.flush()


def check(model_file, param_file, valid_targets):
    import paddlelite.lite as lite

    opt = lite.Opt()
    opt.set_model_file(model_file)
    opt.set_param_file(param_file)
    opt.set_valid_places(valid_targets)
    sys.stdout.flush()
    opt.check_if_model_supported(True)  # prints the table, then exits (1) or aborts
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "check":
        sys.exit(check(*sys.argv[2:5]))
    serve()
