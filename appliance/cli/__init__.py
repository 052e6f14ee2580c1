"""`waypost`: the one command for every operational action.

The commands live by area, one module each: post (init, run, config, db), users, audit (and
report), hotlists, holds (and retention), sharing (and evidence), sync, hq, bench; `eval` and
`recognize` are the recognizer's own (recognizer/cli.py). An area's module is imported only when
one of its commands runs (or the command list is shown): `waypost sync push` on a timer need not
load the web application, the pipeline or OpenCV.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import click

from appliance import config
from appliance.cli.context import OPERATOR_ENV, PASSWORD_FILE_ENV, Context, unattended

# command name -> (module, attribute)
COMMANDS = {
    "init": ("appliance.cli.post", "init"),
    "run": ("appliance.cli.post", "run"),
    "config": ("appliance.cli.post", "config_group"),
    "db": ("appliance.cli.post", "db_group"),
    "user": ("appliance.cli.users", "user"),
    "audit": ("appliance.cli.audit", "audit_group"),
    "report": ("appliance.cli.audit", "report_group"),
    "hotlist": ("appliance.cli.hotlists", "hotlist_group"),
    "hold": ("appliance.cli.holds", "hold_group"),
    "retention": ("appliance.cli.holds", "retention_group"),
    "sharing": ("appliance.cli.sharing", "sharing_group"),
    "evidence": ("appliance.cli.sharing", "evidence_group"),
    "sync": ("appliance.cli.sync", "sync_group"),
    "hq": ("appliance.cli.hq", "hq_group"),
    "bench": ("appliance.cli.bench", "bench_group"),
    "eval": ("recognizer.cli", "eval_command"),
    "recognize": ("recognizer.cli", "recognize_command"),
}


# The recognizer's commands read image files named on the command line and store nothing; they are
# declared here, as recognizer/ knows nothing of who runs a command.
UNATTENDED = {
    "eval": "reads a labelled folder of images; stores nothing",
    "recognize": "reads image files; stores nothing",
}


class _LazyGroup(click.Group):
    """The `waypost` group: each command imported from its module when it is named."""

    def list_commands(self, ctx):
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx, cmd_name):
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attr = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attr)
        if cmd_name in UNATTENDED and not hasattr(command, "permission"):
            command = unattended(UNATTENDED[cmd_name])(command)
        return command


def entry() -> None:
    """The `waypost` program (and `python -m appliance`): what it writes is plate data, evidence
    and the access log, so it makes its files for its own account alone (0600, directories 0700),
    whatever umask the shell or the service manager started it with."""
    os.umask(0o077)
    main(prog_name="waypost")


@click.group(cls=_LazyGroup)
@click.version_option(package_name="waypost", prog_name="waypost")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=config.CONFIG_ENV,
    default=None,
    help="TOML configuration file (default: $WAYPOST_CONFIG, else ./waypost.toml if present, else built-in defaults).",
)
@click.option(
    "--as",
    "operator",
    metavar="USERNAME",
    envvar=OPERATOR_ENV,
    default=None,
    help=f"The account that runs the command (${OPERATOR_ENV}); commands with plate data, hotlists, sharing, holds, "
    f"accounts or the access log need one. Its password is asked, or read from ${PASSWORD_FILE_ENV}.",
)
@click.pass_context
def main(ctx, config_path, operator):
    """Waypost: an offline-first licence plate reader post."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(config_path or config.default_config_path(), operator)
