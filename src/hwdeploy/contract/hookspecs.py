"""The hooks a hwdeploy plugin implements.

A plugin is a module (or object) with functions named like the hooks below,
decorated with :data:`hwdeploy.hookimpl`, and advertised in its package's
``pyproject.toml`` under the ``hwdeploy`` entry-point group::

    [project]
    name = "hwdeploy-acme"
    dependencies = ["hwdeploy>=0.1,<0.2", "paddlepaddle>=3.0,<3.4"]

    [project.entry-points.hwdeploy]
    acme = "hwdeploy_acme.plugin"

The versions of ``hwdeploy`` and ``paddlepaddle`` your package requires are your
compatibility declaration: hwdeploy checks them against what is installed
*before* importing your module, and skips (and reports in ``hwdeploy plugins``)
a plugin that does not fit. A plugin that fails to import or raises in a hook is
reported and skipped too; it never breaks hwdeploy or other plugins.

Keep module import cheap: don't import Paddle or a vendor runtime at module
level; ``hwdeploy devices`` must stay fast, so probes that touch drivers belong
in :func:`hwdeploy.sdk.isolation.run_probe` (subprocess, timeout, cached).

The built-in plugins (``hwdeploy.builtin.cpu`` and the packages under
``plugins/`` in the repository) use nothing but these hooks: copy them.
The whole contract, with a complete plugin that a test runs, is in
``docs/plugin-authors.md``. Every result is checked by the plugin manager
(:data:`hwdeploy.contract.manager.RESULT_CHECKS`); hook wrappers are refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from hwdeploy.contract.records import Device
    from hwdeploy.contract.model import Model
    from hwdeploy.contract.predictor import Predictor
    from hwdeploy.contract.records import Artifact, CliCommand, ConversionTarget, UtilizationSampler
    from hwdeploy.sdk.options import OptionSchema

PROJECT_NAME = "hwdeploy"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def hwdeploy_discover_devices() -> list[Device]:
    """Report the devices this plugin can run on, and the kinds it knows are absent.

    Every plugin's list is merged into ``hwdeploy.devices()``. Report an absent
    or unusable device too, with ``available=False`` and a ``reason`` that says
    what is missing and how to fix it: that is what users see in
    ``hwdeploy devices`` and in the error for ``device="npu:0"``.

    Must be quick and must never crash the caller: run anything that touches a
    driver or native runtime through :func:`hwdeploy.sdk.isolation.run_probe`.

    Called for every plugin; the lists are merged and cached per process
    (``hwdeploy.devices(refresh=True)`` asks again).

    :returns: a list of :class:`hwdeploy.Device` (possibly empty); anything
        else marks the plugin broken and is dropped.

    Example::

        from hwdeploy import Device, hookimpl
        from hwdeploy.sdk.isolation import run_probe

        @hookimpl
        def hwdeploy_discover_devices():
            probe = run_probe("hwdeploy_acme.probe:list_cards", timeout=10)
            if not probe.ok:
                return [Device("acme", available=False, backend="acme-runtime",
                               reason=f"acme driver probe failed: {probe.error}; install acme-driver>=2")]
            return [Device("acme", index=i, name=card["name"], backend="acme-runtime",
                           priority=90, memory_bytes=card["memory"])
                    for i, card in enumerate(probe.value)]
    """


@hookspec
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    """Name the conversion targets this plugin implements (listed by ``hwdeploy convert --list``).

    Called for every plugin; the lists are merged. A name another plugin
    already offers is dropped and reported against this plugin.

    :returns: a list of :class:`hwdeploy.ConversionTarget`.

    Example::

        @hookimpl
        def hwdeploy_conversion_targets():
            return [ConversionTarget("acme", "Acme NPU offline model (.acm)", device_kinds=("acme",))]
    """


@hookspec(firstresult=True)
def hwdeploy_convert_model(model: Model, target: str, options: dict[str, Any], output_dir: Path) -> Artifact | None:
    """Convert ``model`` for ``target`` into ``output_dir``; return None if ``target`` isn't yours.

    hwdeploy owns caching: it calls this only on a cache miss (key: model
    content hash + target + options), with a fresh empty ``output_dir``, and
    publishes the directory atomically when you return. Raise
    :class:`hwdeploy.errors.UnsupportedOpsError` listing *every* op the target
    cannot express, never write a silently wrong model.

    Stops at the first non-None result (``firstresult``).

    :param model: the :class:`hwdeploy.Model` (files already validated).
    :param target: the target name the user asked for.
    :param options: the user's keyword arguments; reject unknown ones with
        :class:`hwdeploy.OptionError`.
    :param output_dir: an empty directory to write into.
    :returns: an :class:`hwdeploy.Artifact` naming the files written, or None.

    Example::

        @hookimpl
        def hwdeploy_convert_model(model, target, options, output_dir):
            if target != "acme":
                return None
            ops = set(hwdeploy.sdk.paddle_format.load_pir_program(model.program).op_types())
            missing = ops - ACME_OPS
            if missing:
                raise UnsupportedOpsError(f"acme cannot run {sorted(missing)}", sorted(missing))
            (output_dir / "model.acm").write_bytes(compile_for_acme(model, **options))
            return Artifact("acme", output_dir, ["model.acm"], {"ops": len(ops)})
    """


@hookspec(firstresult=True)
def hwdeploy_create_predictor(model: Model, device: Device, options: dict[str, Any]) -> Predictor | None:
    """Return a :class:`hwdeploy.Predictor` for ``device`` if it is yours, else None.

    ``device`` is one of the devices your plugin reported as available.
    ``options`` are the keyword arguments the user passed to
    ``hwdeploy.predictor(...)`` (precision, threads, plugin-specific ones);
    reject unknown ones with a clear error. Validate before calling the
    runtime: hwdeploy has already checked the model files.

    After you return, hwdeploy reads ``predictor.receipt()`` and, unless the
    user relaxed the fallback policy, raises :class:`hwdeploy.FallbackError`
    if the receipt shows that execution is not really on ``device``. So make
    the receipt tell the truth: the device the runtime *reports* it uses, and
    per-op placement where the runtime can tell.

    Stops at the first non-None result (``firstresult``). A plugin that needs
    a converted model gets it, cached, with ``hwdeploy.convert(model, target)``.

    :param model: the :class:`hwdeploy.Model` (files already validated).
    :param device: the :class:`hwdeploy.Device` chosen, as your discovery reported it.
    :param options: the user's keyword arguments (``threads``, ``precision``...).
    :returns: a :class:`hwdeploy.Predictor` subclass instance, or None.

    Example::

        @hookimpl
        def hwdeploy_create_predictor(model, device, options):
            if device.kind != "acme":
                return None
            return AcmePredictor(model, device, **options)
    """


@hookspec(firstresult=True)
def hwdeploy_utilization_sampler(device: Device) -> UtilizationSampler | None:
    """Return a sampler of ``device``'s utilisation (NVML, npu-smi, cnmon...), or None.

    The conformance suite samples during a timed run: a device that computes
    correct numbers while sitting idle is a CPU fallback.

    Stops at the first non-None result (``firstresult``). Called in the
    process that runs the predictor (the conformance worker). Return None for
    a device that is not yours; when it is yours but the sampling tool (an smi
    binary) is missing, raise :class:`hwdeploy.BackendError` saying why: the
    suite then reports "sampler unavailable: <why>" instead of "no sampler hook".

    :param device: the :class:`hwdeploy.Device` under test.
    :returns: an object with ``start()`` and ``stop() -> {"samples": int,
        "mean_busy": 0..1, "max_busy": 0..1}`` (:class:`UtilizationSampler`), or None.

    Example::

        @hookimpl
        def hwdeploy_utilization_sampler(device):
            if device.kind == "acme":
                return AcmeSmiSampler(device.index, interval=0.05)
    """


@hookspec
def hwdeploy_cli_commands() -> list[CliCommand]:
    """Add subcommands to the ``hwdeploy`` command line.

    Called for every plugin; a name hwdeploy or another plugin already has is
    dropped and reported against this plugin. A ``configure_parser`` that
    raises makes the command report itself broken instead of running.

    :returns: a list of :class:`hwdeploy.CliCommand`; ``run(args)`` returns the exit code.

    Example::

        @hookimpl
        def hwdeploy_cli_commands():
            def configure(parser):
                parser.add_argument("--card", type=int, default=0)
            def run(args):
                print(acme_firmware_version(args.card))
                return 0
            return [CliCommand("acme-firmware", "show Acme firmware", configure, run)]
    """


@hookspec
def hwdeploy_option_schemas() -> list[OptionSchema]:
    """Declare the options your backends and conversion targets accept (the same schemas your hooks check with).

    ``hwdeploy options``, ``hwdeploy run --help`` and ``docs/options.md`` are generated from these, so a user
    reads what your ``OPTIONS.check(options)`` enforces. Called for every plugin; a schema name (its ``owner``)
    another plugin already declares is dropped and reported against this plugin.

    :returns: a list of :class:`hwdeploy.sdk.options.OptionSchema`.

    Example::

        OPTIONS = OptionSchema("acme backend", [THREADS, Option("precision", str, "fp32", "numeric precision",
                                                                choices=("fp32", "fp16"), nullable=False)])

        @hookimpl
        def hwdeploy_option_schemas():
            return [OPTIONS]
    """
