"""The hwdeploy plugin: contributes the ``hwdeploy conformance`` subcommand. Cheap to import."""

from __future__ import annotations

from hwdeploy import CliCommand, hookimpl


@hookimpl
def hwdeploy_cli_commands() -> list[CliCommand]:
    from hwdeploy_conformance import cli

    return [CliCommand("conformance", cli.HELP, cli.configure_parser, cli.run)]
