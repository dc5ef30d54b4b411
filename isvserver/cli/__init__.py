"""The `isvserver` command: the core's groups, then those of every enabled adapter."""

from __future__ import annotations

import os

import click

from isvserver.adapters import enabled, enabled_parts
from isvserver.cli import call_log, instances, keys, reconcile, reseal, server, usage
from isvserver.files import restrict_umask


class MainGroup(click.Group):
    """The core's commands, and those of the adapters ISV_MARKETPLACES enables when it runs."""

    def _adapters(self) -> dict[str, click.Command]:
        owners = (*enabled(os.environ), *enabled_parts(os.environ))
        return {command.name or "": command for owner in owners for command in owner.cli_commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, the adapters' included."""
        return sorted({*super().list_commands(ctx), *self._adapters()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The core's command of that name, else an enabled adapter's."""
        return super().get_command(ctx, cmd_name) or self._adapters().get(cmd_name)


@click.group(cls=MainGroup)
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
    usage.usage_group,
)
for command in CORE_COMMANDS:
    main.add_command(command)
