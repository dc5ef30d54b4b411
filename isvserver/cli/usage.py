"""`isvserver usage list/show/add/import/push/repush/on-demand`: the usage ledger by hand."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import click

from isvserver import usage, usage_push
from isvserver.cli.helpers import (
    DEFAULT_LIMIT,
    JSON_OPTION,
    LIMIT,
    bound_database,
    more,
    print_fields,
    print_json,
    print_table,
    row,
    settings_or_exit,
)
from isvserver.models import Instance, UsageRecord, UsageUpload
from isvserver.usage import MAX_RECORDS, Report, State, Status

RECORD_FIELDS = (
    "metering_sn",
    "instance_id",
    "marketplace",
    "begin_at",
    "end_at",
    "usage_value",
    "related_instance_id",
    "source",
    "source_name",
    "recorded_at",
    "state",
    "attempts",
    "upload_id",
    "result_code",
    "result_msg",
    "pushed_at",
)
UPLOAD_FIELDS = (
    "id",
    "state",
    "records",
    "attempts",
    "next_attempt_at",
    "http_status",
    "result_code",
    "result_msg",
    "body_sha256",
    "created_at",
    "sent_at",
    "finished_at",
)
CSV_COLUMNS = ("instanceId", "meteringSn", "beginTime", "endTime", "value")
CSV_OPTIONAL = ("relatedInstanceId",)
MAX_CSV_BYTES = 256 * 1024 * 1024


def _record_out(record: UsageRecord) -> dict[str, Any]:
    out = row(record, [n for n in RECORD_FIELDS if n not in ("instance_id", "usage_value")])
    out["instance_id"] = record.instance.instance_id
    out["usage_value"] = format(record.usage_value, "f")
    return {name: out[name] for name in RECORD_FIELDS}


@click.group("usage")
def usage_group() -> None:
    """The usage ledger (pay-per-use): list, add, import, push and re-push records."""


@usage_group.command("list")
@click.option("--instance", "instance_id", help="Only this instance's records.")
@click.option("--state", type=click.Choice([s.value for s in State]), help="Only records in this state.")
@click.option("--limit", type=LIMIT, default=DEFAULT_LIMIT, show_default=True)
@JSON_OPTION
def usage_list(instance_id: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List records, the most recently stored first."""
    settings = settings_or_exit()
    with bound_database(settings):
        query = UsageRecord.select(UsageRecord, Instance).join(Instance)
        if instance_id is not None:
            query = query.where(Instance.instance_id == instance_id)
        if state is not None:
            query = query.where(UsageRecord.state == state)
        records = list(query.order_by(UsageRecord.id.desc()).limit(limit + 1))
    shown = [_record_out(r) for r in records[:limit]]
    if as_json:
        print_json(shown)
    else:
        print_table(
            ("meteringSn", "instance", "begin", "end", "value", "state", "attempts", "result"),
            (
                (
                    r["metering_sn"],
                    r["instance_id"],
                    r["begin_at"],
                    r["end_at"],
                    r["usage_value"],
                    r["state"],
                    r["attempts"],
                    " ".join(str(v) for v in (r["result_code"], r["result_msg"]) if v) or None,
                )
                for r in shown
            ),
        )
    more(len(records), limit)


@usage_group.command("show")
@click.argument("metering_sn")
@JSON_OPTION
def usage_show(metering_sn: str, as_json: bool) -> None:
    """One record, and the upload that holds it."""
    settings = settings_or_exit()
    with bound_database(settings):
        record = (
            UsageRecord.select(UsageRecord, Instance)
            .join(Instance)
            .where(UsageRecord.metering_sn == metering_sn)
            .first()
        )
        if record is None:
            raise click.ClickException(f"no usage record {metering_sn}")
        upload = UsageUpload.get_or_none(UsageUpload.id == record.upload_id) if record.upload_id else None
    out = _record_out(record)
    upload_out = row(upload, UPLOAD_FIELDS) if upload is not None else None
    if as_json:
        print_json({**out, "upload": upload_out})
        return
    print_fields(out.items())
    if upload_out is not None:
        click.echo("upload:")
        print_fields((f"  {name}", value) for name, value in upload_out.items())


def _print_outcomes(outcomes: list[usage.Outcome], where: list[str] | None = None) -> None:
    counts = {status: sum(1 for o in outcomes if o.status == status) for status in Status}
    click.echo(", ".join(f"{status.value} {count}" for status, count in counts.items()))
    for index, outcome in enumerate(outcomes):
        if outcome.status == Status.REFUSED:
            place = f"{where[index]}: " if where else ""
            click.echo(
                f"{place}{outcome.metering_sn or '-'} refused ({outcome.code}): {outcome.reason}", err=True
            )


@usage_group.command("add")
@click.argument("instance_id")
@click.argument("metering_sn")
@click.argument("begin_time")
@click.argument("end_time")
@click.argument("value")
@click.option("--related", "related_instance_id", help="The package instance (relate_pkg_instance).")
def usage_add(
    instance_id: str,
    metering_sn: str,
    begin_time: str,
    end_time: str,
    value: str,
    related_instance_id: str | None,
) -> None:
    """Record one usage record (times ISO-8601 or yyyyMMdd'T'HHmmss'Z', UTC)."""
    settings = settings_or_exit()
    with bound_database(settings):
        report = Report(instance_id, metering_sn, begin_time, end_time, value, related_instance_id)
        outcomes = usage.record_safely(settings, [report], "cli")
    _print_outcomes(outcomes)
    if outcomes[0].status == Status.REFUSED:
        sys.exit(1)


def _csv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of every data row; ClickException when the header lacks a column."""
    if path.stat().st_size > MAX_CSV_BYTES:
        raise click.ClickException(f"{path} is over {MAX_CSV_BYTES // (1024 * 1024)} MiB: split it")
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise click.ClickException(
            f"{path}: the header must name {', '.join(CSV_COLUMNS)} (missing: {', '.join(missing)})"
        )
    return [(reader.line_num, dict(item)) for item in reader]


@usage_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def usage_import(path: Path) -> None:
    """Record the usage records of a CSV file (header: instanceId,meteringSn,beginTime,endTime,value[,
    relatedInstanceId]), stored 1000 at a time; a refused row is named by its line."""
    settings = settings_or_exit()
    rows = _csv_rows(path)
    outcomes: list[usage.Outcome] = []
    with bound_database(settings):
        for start in range(0, len(rows), MAX_RECORDS):
            chunk = rows[start : start + MAX_RECORDS]
            reports = [
                Report(*(item.get(c) or None for c in (*CSV_COLUMNS, *CSV_OPTIONAL))) for _, item in chunk
            ]
            outcomes.extend(usage.record_safely(settings, reports, "csv", path.name[:64]))
    _print_outcomes(outcomes, [f"line {line}" for line, _ in rows])
    if any(o.status == Status.REFUSED for o in outcomes):
        sys.exit(1)


@usage_group.command("push")
@click.option(
    "--now", is_flag=True, help="Push the pending records at once (the consumer does it on a timer)."
)
def usage_push_now(now: bool) -> None:
    """Push the pending records to their marketplaces (with --now; ISV_USAGE_PUSH_DRY_RUN=1 only logs)."""
    settings = settings_or_exit()
    if not now:
        raise click.ClickException(
            f"the job consumer pushes every {settings.usage_push_interval_s} s; "
            "`usage push --now` pushes at once"
        )
    with bound_database(settings):
        summaries = usage_push.push_all(settings)
    for s in summaries:
        click.echo(
            f"{s.marketplace}: uploads taken {s.uploads}, records pushed {s.pushed}, refused {s.refused}, "
            f"expired {s.expired}, failed uploads {s.failed}"
            + (f", dry-run batches {s.dry_run_batches}" if settings.usage_push_dry_run else "")
        )
    if any(s.failed for s in summaries):
        sys.exit(1)


@usage_group.command("repush")
@click.argument("metering_sns", nargs=-1, required=True)
def usage_repush(metering_sns: tuple[str, ...]) -> None:
    """Push records again (one the marketplace's console reports refused): pending at the next push."""
    settings = settings_or_exit()
    with bound_database(settings):
        done = usage_push.repush(metering_sns)
    for sn, what in done.items():
        click.echo(f"{sn}: {what}")
    if any(what == "unknown meteringSn" for what in done.values()):
        sys.exit(1)


@usage_group.command("on-demand")
@click.argument("instance_id")
@click.option("--off", is_flag=True, help="Mark it not on-demand.")
def usage_on_demand(instance_id: str, off: bool) -> None:
    """Mark an instance on-demand by hand (its order line says so when ISV_MARKET_AK/SK are set)."""
    settings = settings_or_exit()
    with bound_database(settings):
        if not Instance.select().where(Instance.instance_id == instance_id).exists():
            raise click.ClickException(f"no instance {instance_id}")
        changed = usage.mark_on_demand(instance_id, not off)
    state = "not on-demand" if off else "on-demand"
    click.echo(f"instance {instance_id} {'is now' if changed else 'was already'} {state}")
