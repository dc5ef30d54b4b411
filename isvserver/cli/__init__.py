"""The `isvserver` command: the core's groups, then those of every enabled adapter."""

from __future__ import annotations

import os
from typing import Any

import click

from isvserver import settings_file
from isvserver.adapters import available, enabled, enabled_parts, load
from isvserver.cli import call_log, instances, keys, reconcile, reseal, server, simulate, usage
from isvserver.files import restrict_umask


class MainGroup(click.Group):
    """The core's commands, and those of the adapters ISV_MARKETPLACES enables (environment first, then
    the settings file, read before any command is looked up)."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """Read the settings file into the environment first: every command, option default and process
        started from here (gunicorn, its workers, the job consumer) sees the same settings."""
        try:
            settings_file.apply()
        except settings_file.SettingsFileError as exc:
            raise click.ClickException(str(exc)) from None
        return super().make_context(info_name, args, parent, **extra)

    def _adapters(self) -> dict[str, click.Command]:
        owners = (*enabled(os.environ), *enabled_parts(os.environ))
        return {command.name or "": command for owner in owners for command in owner.cli_commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, the adapters' included."""
        return sorted({*super().list_commands(ctx), *self._adapters()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The core's command of that name, else an enabled adapter's."""
        return super().get_command(ctx, cmd_name) or self._adapters().get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command; a command of an adapter that is not enabled says which adapter to enable."""
        name = args[0] if args else ""
        if self.get_command(ctx, name) is None:
            for adapter in available():
                if any(command.name == name for command in load(adapter).cli_commands):
                    raise click.UsageError(
                        f"{name!r} is a command of the {adapter} adapter, which ISV_MARKETPLACES does not "
                        f"enable (add it there, in the environment or the settings file)",
                        ctx,
                    )
        return super().resolve_command(ctx, args)


@click.group(cls=MainGroup)
@click.version_option(package_name="isvserver", message="%(prog)s %(version)s")
def main() -> None:
    """isvserver: the server a SaaS seller runs for cloud marketplaces (Huawei Cloud KooGallery…).

    Settings come from the environment, then from the settings file: ISV_SETTINGS_FILE, else
    ./isvserver.env when it exists.
    """
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
    simulate.simulate,
)
for command in CORE_COMMANDS:
    main.add_command(command)
