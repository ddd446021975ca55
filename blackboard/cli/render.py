"""The operator reports as tables for a terminal (``--format text``); ``--format json`` prints them as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from rich.markup import escape
from rich.table import Table

from blackboard.cli.base import table

if TYPE_CHECKING:
    from blackboard.ops.dead_letters import Bytes, DeadLetterDetail, DeadLettersReport
    from blackboard.ops.doctor import DoctorReport
    from blackboard.ops.dry_run import DryRunReport
    from blackboard.ops.lag import LagReport
    from blackboard.ops.topics import TopicsReport
    from blackboard.ops.verify import VerifyReport


class Generations(msgspec.Struct, frozen=True):
    """The generations of the read models, as ``replay list`` and ``replay drop`` print them."""

    generations: list[Any]


_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def settings_table(report: DoctorReport) -> Table:
    result = table("settings (secrets masked)", "setting", "variable", "value", "required")
    for s in report.settings:
        value = "—" if s.value is None else escape(s.value)
        result.add_row(s.name, s.env, value, "required" if s.required else "optional")
    return result


def checks_table(report: DoctorReport) -> Table:
    verdict = "[green]healthy[/]" if report.ok else "[red]PROBLEMS[/]"
    result = table(f"checks: {verdict}", "check", "status", "detail")
    for c in report.checks:
        style = _STATUS_STYLE[c.status]
        result.add_row(escape(c.name), f"[{style}]{c.status}[/]", escape(c.detail))
    return result


def topics_table(report: TopicsReport) -> Table:
    result = table(f"topics ({report.engine} log), {report.total} records", "topic", "partition", "end offset",
                   "bytes", "config")
    for topic in report.topics:
        if not topic.exists:
            result.add_row(escape(topic.name), "—", "missing", "", "", end_section=True)
        for p in topic.partitions:
            result.add_row(escape(topic.name), str(p.partition), str(p.end_offset), _size(p.size_bytes), "")
        if topic.exists:
            config = _config_text(topic.config)
            result.add_row(f"[bold]{escape(topic.name)}[/]", "all", f"[bold]{topic.total}[/]",
                           f"[bold]{_size(topic.size_bytes)}[/]", escape(config), end_section=True)
    return result


def _config_text(config: dict[str, str] | None) -> str:
    return "unknown" if config is None else ", ".join(f"{k}={v}" for k, v in sorted(config.items()))


def _size(size: int | None) -> str:
    return "unknown" if size is None else str(size)


def lag_table(report: LagReport) -> Table:
    sampled = f", rate over {report.sample_seconds:g} s" if report.sample_seconds else ""
    result = table(f"projection {report.projection!r} on {escape(report.topic)}{sampled}", "partition",
                   "next offset", "end offset", "lag", "events/s", "eta")
    for p in report.partitions:
        stored = "—" if p.next_offset is None else str(p.next_offset)
        rate = "—" if p.rate is None else f"{p.rate:.1f}"
        result.add_row(str(p.partition), stored, str(p.end_offset), str(p.lag), rate,
                       _eta(p.lag, p.eta_seconds, sampled=bool(report.sample_seconds)))
    result.add_row("[bold]total[/]", "", "", f"[bold]{report.total}[/]", "",
                   f"[bold]{_eta(report.total, report.eta_seconds, sampled=bool(report.sample_seconds))}[/]")
    return result


def _eta(lag: int, seconds: float | None, *, sampled: bool) -> str:
    """``∞`` when the lag will not shrink at the measured rate, ``—`` when no rate was measured."""
    if seconds is None:
        return "∞" if sampled else "—"
    return f"{seconds:.1f} s"


def replay_table(r: Any) -> Table:
    result = table(f"generation {r.generation} ({r.schema}): {'live' if r.swapped else 'built, not live'}",
                   "measure", "value")
    for name in ("previous", "records", "applied", "dead_letters", "seconds", "events_per_second", "workers"):
        result.add_row(name, str(getattr(r, name)))
    return result


def dry_run_table(r: DryRunReport) -> Table:
    result = table(f"dry run: {r.records} records, {r.applied} applied, {r.dead_letters} dead letters, "
                   f"{r.seconds} s", "table", "live rows", "rebuilt rows", "equal", "differing keys")
    for t in r.tables:
        result.add_row(t.table, str(t.live_rows), str(t.rebuilt_rows), "yes" if t.equal else "[red]no[/]",
                       escape(", ".join(map(str, t.differing_keys))))
    return result


def generations_table(report: Generations) -> Table:
    result = table("generations of the read models", "number", "schema", "state", "created", "swapped")
    for g in report.generations:
        result.add_row(str(g.number), g.schema, g.state, f"{g.created_at:%Y-%m-%d %H:%M:%S}",
                       f"{g.swapped_at:%Y-%m-%d %H:%M:%S}" if g.swapped_at else "")
    return result


def resolution_table(r: Any) -> Table:
    result = table(f"dead letters of {r.stream or 'an unknown stream'}", "outcome", "ids")
    for name in ("applied", "skipped", "open", "held"):
        result.add_row(name, ", ".join(map(str, getattr(r, name))) or "-")
    return result


def dead_letters_table(report: DeadLettersReport) -> Table:
    result = table(f"{len(report.dead_letters)} of {report.total} dead letters, newest first",
                   "id", "position", "stream", "status", "reason", "created at")
    for d in report.dead_letters:
        result.add_row(str(d.id), escape(f"{d.topic}/{d.partition}/{d.offset}"), escape(d.stream or "?"), d.status,
                       escape(d.reason), f"{d.created_at:%Y-%m-%d %H:%M:%S}")
    return result


def dead_letter_table(d: DeadLetterDetail) -> Table:
    result = table(f"dead letter {d.id}", "field", "value")
    for name, value in (("projection", d.projection), ("position", f"{d.topic}/{d.partition}/{d.offset}"),
                        ("reason", d.reason), ("created at", f"{d.created_at:%Y-%m-%d %H:%M:%S %z}"),
                        ("headers", msgspec.json.encode(d.headers).decode()),
                        ("key", _bytes_text(d.key)), ("value", _bytes_text(d.value))):
        result.add_row(name, escape(value))
    return result


def _bytes_text(data: Bytes | None) -> str:
    return "—" if data is None else f"({data.encoding}) {data.data}"


def verify_table(report: VerifyReport) -> Table:
    verdict = "[green]all equal[/]" if report.equal else "[red]DIFFERENT[/]"
    result = table(f"read models vs a rebuild from offset 0: {verdict}", "table", "result", "live rows",
                   "rebuilt rows", "differing keys")
    for t in report.tables:
        outcome = "[green]OK[/]" if t.equal else "[red]DIFFERENT[/]"
        keys = ", ".join("/".join(str(part) for part in key) for key in t.differing_keys)
        result.add_row(t.table, outcome, str(t.live_rows), str(t.rebuilt_rows), escape(keys))
    if any(report.live_offsets.get(p, 0) > end for p, end in report.targets.items()):
        result.caption = ("the live projection moved past the rebuilt offsets meanwhile: "
                          "rows changed since may differ for that reason alone")
    return result
