"""How ``python -m ops host ...`` says what it found and did (the other commands' rendering is :mod:`ops.render`)."""

from __future__ import annotations

from typing import Any

from worker.redact import printable

from .render import duration


def host_list(result: dict[str, Any]) -> str:
    """``ops host list``: one row per host, the busiest first, and how many more there are."""
    if not result["hosts"]:
        return "no host known: no leader has recorded one yet (hosts quiet for 10 minutes are forgotten)"
    head: tuple[str, ...] = ("host", "shard", "rate/s", "capacity/s", "in flight", "waiting", "circuit")
    head += ("retry-after", "status", "updated")
    rows = [head, *(_host_row(host) for host in result["hosts"])]
    widths = [max(len(row[column]) for row in rows) for column in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if result["more"]:
        lines.append(f"and {result['more']} more hosts (--limit N shows more, --limit 0 all)")
    return "\n".join(lines)


def _host_row(host: dict[str, Any]) -> tuple[str, ...]:
    if host["paused"]:
        left = host["paused_for"]
        state = "paused, until resumed" if left is None else f"paused, {duration(left)} left"
    elif host["circuit"] == "open" and host["probe_in"] is not None:
        state = f"open, probe in {duration(host['probe_in'])}"
    else:
        state = host["circuit"] or "-"

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}" if value < 1000 else f"{value:.0f}"

    return (
        printable(host["host"])[:80],  # from Redis
        str(host["shard"]),
        rate(host["rate"]),
        rate(host["capacity"]),
        str(host["in_flight"]),
        str(host["waiting"]),
        printable(state)[:40],
        duration(host["retry_after"]) if host["retry_after"] > 0 else "-",
        "-" if host["last_status"] is None else str(host["last_status"]),
        "-" if host["updated_age"] is None else f"{duration(host['updated_age'])} ago",
    )


def host_paused(result: dict[str, Any], max_delay: float) -> str:
    """What ``ops host pause`` wrote, and when it takes effect."""
    how_long = "until resumed" if result["for"] is None else f"for {duration(result['for'])}"
    return (
        f"paused {result['host']} {how_long} ({_where(result['shards'])}). Its leader stops starting its callbacks"
        f" within a housekeeping pass (about CALLBACK_MAX_DELAY, {duration(max_delay)}); those in flight finish,"
        " the others wait without spending attempts."
        f" Undo: python -m ops host resume {result['host']}"
    )


def host_resumed(result: dict[str, Any], max_delay: float) -> str:
    """What ``ops host resume`` released, or that there was nothing to release."""
    if not result["resumed"]:
        return f"{result['host']} is not paused (in any shard); nothing to resume (see python -m ops host list)"
    return (
        f"resumed {result['host']} ({_where(result['shards'])}); its leader starts its callbacks again within a"
        f" housekeeping pass (about CALLBACK_MAX_DELAY, {duration(max_delay)})"
    )


def _where(shards: list[int]) -> str:
    if len(shards) == 1:
        return f"shard {shards[0]}"
    return f"shards {', '.join(map(str, shards))}: the shard count changed, its callbacks may be in each"
