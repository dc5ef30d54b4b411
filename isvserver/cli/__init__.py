"""The `isvserver` command: the core's groups, then those of every enabled adapter."""

from __future__ import annotations

import os
from contextlib import suppress

import click

from isvserver.adapters import AdapterError, load
from isvserver.cli import call_log, instances, keys, reconcile, reseal, server
from isvserver.files import restrict_umask


@click.group()
@click.version_option(package_name="isvserver", message="%(prog)s %(version)s")
def main() -> None:
    """isvserver: the server a SaaS seller runs for cloud marketplaces (Huawei Cloud KooGallery…)."""
    restrict_umask()  # files it (and gunicorn, exec'd by serve) creates are its user's alone


CORE_COMMANDS = (
    server.migrate,
    server.serve,
    server.worker,
    server.webhook_secret,
    server.data_key,
    instances.instances,
    call_log.log_group,
    keys.keys,
    reseal.rotate_data_key,
    reconcile.reconcile,
)
for command in CORE_COMMANDS:
    main.add_command(command)


def _adapter_commands() -> None:
    """The commands of the adapters ISV_MARKETPLACES enables (koogallery by default)."""
    names = os.environ.get("ISV_MARKETPLACES") or "koogallery"
    for name in dict.fromkeys(n.strip() for n in names.split(",") if n.strip()):
        with suppress(AdapterError):  # a wrong name is reported with the settings, by the command
            for command in load(name).cli_commands:
                main.add_command(command)


_adapter_commands()
