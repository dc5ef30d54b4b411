"""`isvserver simulate`: act as a marketplace toward this server, one call (each interface's own
commands, from the enabled adapters) or every enabled interface's flow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from isvserver.adapters import Simulation, available, enabled, load
from isvserver.body_sign import Answer

AUTH_FAILED = "000001"  # every KooGallery generation's "authentication failed"


class HttpUrl(click.ParamType):
    """An http:// or https:// URL with a host (one clear line otherwise, never a traceback)."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The URL as given, when it is http(s) with a host."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(str(value))
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port
        except ValueError:
            ok = False
        if not ok:
            self.fail(
                f"{value!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8000/saasproduce)",
                param,
                ctx,
            )
        return str(value)


URL = HttpUrl()


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn a failure to reach `url` into one line."""
    try:
        yield
    except OSError as exc:  # urllib's URLError, refused or reset connections, timeouts
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise click.ClickException(f"cannot reach {url}: {reason} (is the server running?)") from None


def explain(answer: Answer, key_option: str = "--key") -> None:
    """Say the likely cause of a wrong answer a new user meets (printed on standard error)."""
    if answer.status == 404:
        click.echo(
            "  nothing answers at this URL's path: use the server's produce URL (its path is "
            "ISV_PRODUCE_PATH, /saasproduce by default)",
            err=True,
        )
    elif answer.code == AUTH_FAILED and not answer.body_sign_ok:
        click.echo(f"  signature does not match: check {key_option} (the server knows another key)", err=True)


def simulations() -> dict[str, Simulation]:
    """What the enabled adapters can simulate, by name."""
    return {s.name: s for adapter in enabled(os.environ) for s in adapter.simulations}


class SimulateGroup(click.Group):
    """`flow`, then every enabled adapter's simulations; a wrong name lists the valid ones."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """`flow` and each simulation that is a command, in the adapters' order."""
        return ["flow", *(name for name, s in simulations().items() if s.command is not None)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """`flow`, or the simulation of that name."""
        if cmd_name == "flow":
            return flow
        found = simulations().get(cmd_name)
        return found.command if found is not None else None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command named first; an unknown one is refused with the list of the valid ones."""
        if args and self.get_command(ctx, args[0]) is None:
            for adapter in available():
                if any(s.name == args[0] for s in load(adapter).simulations):
                    raise click.UsageError(
                        f"{args[0]!r} simulates the {adapter} adapter, which ISV_MARKETPLACES does not "
                        "enable (add it there, in the environment or the settings file)",
                        ctx,
                    )
            raise click.BadParameter(
                f"{args[0]!r} is not an activity; use one of: {', '.join(self.list_commands(ctx))}",
                ctx,
                param_hint="ACTIVITY",
            )
        return super().resolve_command(ctx, args)


@click.group(cls=SimulateGroup, subcommand_metavar="ACTIVITY URL [name=value ...]")
def simulate() -> None:
    """Act as the marketplace: send one signed ACTIVITY to URL (the produce URL, e.g.
    http://127.0.0.1:8000/saasproduce), or run `flow`; each reply's Body-Sign is checked.

    `isvserver simulate ACTIVITY --help` tells what an activity sends and which key it signs with.
    """


@click.command("flow")
@click.argument("url", type=URL)
@click.option("--test", "test_flag", is_flag=True, help="Send testFlag=1 (debug requests).")
@click.option(
    "--key",
    envvar="ISV_SIGN_KEY",
    show_envvar=True,
    show_default="the configured key of the basic interface",
    help="Key of the KooGallery basic interface to sign with (the other interfaces' flows sign with "
    "their own configured keys).",
)
def flow(url: str, test_flag: bool, key: str | None) -> None:
    """Run every enabled interface's flow against URL: the whole life of an instance (KooGallery V2),
    then the Kit syncs (koogallery_kit); exit 1 on any wrong answer."""
    ok = True
    with reaching(url):
        for simulation in simulations().values():
            if simulation.flow is not None:
                ok = simulation.flow(url, test_flag, key) and ok
    raise SystemExit(0 if ok else 1)
