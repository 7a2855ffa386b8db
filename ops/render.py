"""Human-readable text for the results of ``ops.commands`` (``--json`` prints :func:`as_json` instead)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any, TextIO

import redis

from worker.redact import printable

from .commands import RecoverReport

PROGRESS_MIN = 100  # a progress bar only for more entries than this
MAX_LINE_CHARS = 2000  # of an error line (a configuration error lists every known variable)
_PIPELINE_ERROR = re.compile(r"Command # \d+ \((\S+)(?: (\S+))?.*?\) of pipeline caused error: (.*)", re.DOTALL)


def one_line(text: str) -> str:
    """``text`` as one printable line for stderr: line breaks become spaces, other controls are escaped, clipped."""
    flat = printable(" ".join(text.splitlines()))
    return flat if len(flat) <= MAX_LINE_CHARS else flat[:MAX_LINE_CHARS] + "…"


def redis_refusal(error: redis.ResponseError, namespace: str, queue: str) -> str:
    """What Redis refused and what to do; a pipeline's command is named by its name and key, never its values."""
    message = str(error)
    if found := _PIPELINE_ERROR.match(message):
        command, key, message = found.group(1), found.group(2) or "", found.group(3)
        message = f"{command} {key}: {message}".replace(" :", ":")
    if "WRONGTYPE" in message:
        hint = (
            f"one of the {namespace}:{{{queue}}}:* keys (or a shard's, {{{queue}:N}}) holds the wrong kind of value"
            " (written by hand?): find it"
            " with redis-cli TYPE and delete it (or all of them: python -m ops reset --yes)"
        )
    else:
        hint = "the command was not carried out"
    return f"Redis refused: {message[:300]}; {hint}"


def as_json(result: Any) -> str:
    """The result as indented JSON (dataclasses become objects)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    return json.dumps(result, indent=2, sort_keys=True, default=str)


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3.5 min``, ``2.0 h``, ``1.5 d``; a dash when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def status(state: dict[str, Any], claim_idle: float) -> str:
    """One screen: stream, group and consumers, retries, dead letters, leader, fleet, counters; then each shard's."""
    shards = state["shards"]
    sharded = len(shards) > 1
    rows = [("queue", f"namespace {state['namespace']}, queue {state['queue']}" + _shard_count(state))]
    oldest = "" if state["oldest_age"] is None else f", oldest {duration(state['oldest_age'])} old"
    rows.append(("backlog", f"{state['backlog']} in the stream{oldest}"))
    if state["group"]:
        lag = "unknown" if state["lag"] is None else state["lag"]
        rows.append(("group", f"{state['pending']} pending (read, not settled), {lag} not read yet (lag)"))
    else:
        rows.append(("group", "none yet (the first leader creates it)"))
    for consumer in state["consumers"]:
        stuck = consumer["pending"] and consumer["idle"] > claim_idle
        hint = "  <- silent: a leader reclaims these, or run `python -m ops recover`" if stuck else ""
        where = f" (shard {consumer['shard']})" if sharded else ""
        text = f"{consumer['name']}{where}: {consumer['pending']} pending, idle {duration(consumer['idle'])}{hint}"
        rows.append(("consumer", text))
    due = "" if state["next_due"] is None else f", next due in {duration(state['next_due'])}"
    rows.append(("retries", f"{state['delayed']} delayed{due}"))
    hint = "  (list them: python -m ops replay --dry-run)" if state["dead"] else ""
    rows.append(("dead", f"{state['dead']} dead letters{hint}"))
    if sharded:
        leaders = state["leaders"]
        rows.append(("leaders", f"{leaders['led']} of {leaders['of']} shards have a leader (see below)"))
    else:
        rows.append(("leader", _leader(state["leader"])))
    rows.append(("fleet", _fleet(state["fleet"])))
    counters = state["counters"]
    rows.append(("counters", "  ".join(f"{name} {value}" for name, value in counters.items())))
    last = state["last_send_ago"]
    rows.append(("last send", "never" if last is None else f"{duration(last)} ago"))
    rows.append(("db writer", _writer(state["writer"])))
    lines = [f"{label:<10} {text}" for label, text in rows]
    if sharded:
        lines += ["", *_shard_table(state)]
    return "\n".join(map(printable, lines))  # names and holders come from Redis


def _shard_count(state: dict[str, Any]) -> str:
    shards, configured = len(state["shards"]), state["configured_shards"]
    if shards == 1:
        return ""
    draining = [str(shard["shard"]) for shard in state["shards"] if shard["draining"]]
    which = f"shard{'s' if len(draining) > 1 else ''} {', '.join(draining)}"
    more = f"; {which} draining (CALLBACK_SHARDS is {configured})" if draining else ""
    return f", {shards} shards{more}"


def _shard_table(state: dict[str, Any]) -> list[str]:
    """Each shard's backlog, pending, delayed, dead and leader, and the totals."""
    head = ("shard", "backlog", "pending", "delayed", "dead", "leader holder", "epoch")
    rows = [
        (
            str(shard["shard"]) + (" (draining)" if shard["draining"] else ""),
            *(str(shard[name]) for name in ("backlog", "pending", "delayed", "dead")),
            printable(shard["leader"]["holder"] or "?")[:60] if shard["leader"]["held"] else "no leader",
            "-" if shard["leader"]["epoch"] is None else str(shard["leader"]["epoch"]),
        )
        for shard in state["shards"]
    ]
    leaders = state["leaders"]
    totals = [str(state[name]) for name in ("backlog", "pending", "delayed", "dead")]
    rows.append(("total", *totals, f"{leaders['led']} of {leaders['of']} led", ""))
    widths = [max(len(row[column]) for row in (head, *rows)) for column in range(len(head))]
    return [_cells(row, widths) for row in (head, *rows)]


def _cells(row: tuple[str, ...], widths: list[int]) -> str:
    """One table row: the counts (columns 1 to 4) right-aligned, the others left-aligned."""
    cells = (
        cell.rjust(width) if 1 <= i <= 4 else cell.ljust(width)
        for i, (cell, width) in enumerate(zip(row, widths, strict=True))
    )
    return "  ".join(cells).rstrip()


def _fleet(processes: list[dict[str, Any]], shown: int = 8) -> str:
    if not processes:
        return "no live worker process (none said it was alive in the last 10 s)"
    named = ", ".join(f"{p['process']} leads {p['leads']}" for p in processes[:shown])
    more = f", and {len(processes) - shown} more" if len(processes) > shown else ""
    return f"{len(processes)} live worker process{'es' if len(processes) > 1 else ''}: {named}{more}"


def _writer(writer: dict[str, Any]) -> str:
    who = f"writing as {writer['holder']}" if writer["held"] else "no status writer (status updates wait in Redis)"
    bad = f", {writer['bad']} set aside as malformed ({{queue}}:status:bad)" if writer["bad"] else ""
    return f"{who}; {writer['backlog']} status entries waiting, {writer['pending']} read not yet committed{bad}"


def _leader(leader: dict[str, Any]) -> str:
    who = f"{leader['holder'] or 'unknown holder'} (epoch {leader['epoch'] if leader['epoch'] is not None else '?'})"
    renewed = f"renewed {duration(leader['since_renewal'])} ago"
    if not leader["held"]:
        return "no leader" + (f"; last was {who}, {renewed}" if leader["holder"] else "")
    ttl = "never expires (!)" if leader["ttl"] is None else f"expires in {duration(leader['ttl'])}"
    return f"{who}, leading for {duration(leader['age'])}, {renewed}, lease {ttl}"


def recover(report: RecoverReport, claim_idle: float) -> str:
    """What recover did, one line per action (summed over the shards it looked at)."""
    lines = []
    if report.promoted:
        lines.append(f"moved {report.promoted} due retries from the delayed set to the stream")
    if report.handed_back:
        lines.append(f"handed {report.handed_back} entries pending > {duration(claim_idle)} back to the stream's tail")
    if report.dead_lettered:
        lines.append(f"dead-lettered {report.dead_lettered} poison entries (read too many times)")
    for lease in report.stale_leases:
        where = f" of shard {lease['shard']}" if report.shards > 1 else ""
        lines.append(f"deleted the stale leader lease{where} of {lease['holder']} (it had stopped renewing)")
    if report.consumers_removed:
        lines.append(f"deleted idle consumers with nothing pending: {', '.join(report.consumers_removed)}")
    if lines:
        return "\n".join(map(printable, lines))  # holders and consumer names come from Redis
    return "nothing to recover" + (f" (in {report.shards} shards)" if report.shards > 1 else "")


def unlock(result: dict[str, Any]) -> str:
    """The outcome of a forced lease release, shard by shard when there are several or one was asked."""
    released = [lease for lease in result["shards"] if lease["released"]]
    if not released:
        return "no leader lease was held; nothing to do"
    sharded = len(result["shards"]) > 1 or result["shards"][0]["shard"] != 0
    lines = []
    for lease in released:
        where = f" of shard {lease['shard']}" if sharded else ""
        who = f"{lease['holder'] or 'an unknown holder'} (epoch {lease['epoch'] or '?'})"
        lines.append(f"released the leader lease{where} of {who}.")
    lines.append(
        "warning: if that leader is alive it notices at its next renewal and stops taking new work;"
        " the next worker to try becomes leader."
    )
    return "\n".join(map(printable, lines))


def reset(result: dict[str, Any], namespace: str) -> str:
    """How many keys a reset deleted."""
    return f"deleted {result['deleted']} keys of namespace {namespace!r} ({', '.join(result['patterns'])})"


def replay(result: dict[str, Any]) -> str:
    """A dry run lists the matching dead letters; a real run says how many went back."""
    matched = result["matched"]
    if not matched:
        return "no dead letters match"
    if not result["dry_run"]:
        gone = len(matched) - result["replayed"]
        note = f" ({gone} were already gone: another replay?)" if gone else ""
        return f"replayed {result['replayed']} dead letters to the stream with attempts reset{note}"
    lines = [f"would replay {len(matched)} dead letters:"]
    sharded = any(letter.get("shard") for letter in matched)
    for letter in matched:
        cid, url, reason = letter.get("cid", "?"), letter.get("url", "?"), letter.get("reason", "")
        where = f"shard {letter['shard']}  " if sharded else ""
        lines.append(f"  {where}{letter['stream_id']}  {cid}  {url}  dead {duration(letter['dead_age'])} ago: {reason}")
    return "\n".join(map(printable, lines))


def inspect(query: str, sightings: list[dict[str, Any]]) -> str:
    """Each place the callback was found, then its fields."""
    if not sightings:
        return f"{query}: not found in the stream, the delayed retries or the dead letters"
    blocks = []
    for sighting in sightings:
        place = {"stream": "in the stream", "delayed": "in the delayed retries", "dead": "in the dead letters"}
        head = place[sighting["place"]] + (f" of shard {sighting['shard']}" if sighting.get("shard") else "")
        head += f" as {sighting['stream_id']}" if sighting["stream_id"] else ""
        if "due_in" in sighting:
            head += f", due in {duration(max(0.0, sighting['due_in']))}"
        if "consumer" in sighting:
            head += f", pending with {sighting['consumer']} (read {sighting['deliveries']} times)"
        if sighting.get("generation"):
            head += f", generation {sighting['generation']} (replayed {sighting['generation']} times)"
        fields = [f"  {printable(str(name))}: {printable(str(value))}" for name, value in sighting["fields"].items()]
        blocks.append("\n".join([head, *fields, *map(_earlier, sighting.get("history") or [])]))
    return "\n\n".join(blocks)


def _earlier(record: dict[str, Any]) -> str:
    """One earlier generation of a replayed callback: when it died, after how many attempts, why."""
    ago = "" if record.get("dead_age") is None else f" {duration(record['dead_age'])} ago"
    reason = printable(str(record.get("reason") or "no reason recorded"))
    generation, attempts = record.get("generation", "?"), record.get("attempts", "?")
    return f"  earlier: generation {generation} dead{ago} after {attempts} attempts: {reason}"


class ProgressBar:
    """``progress(done, total)`` for :func:`ops.commands.replay`: a bar on stderr when total > 100."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self._stream = stream or sys.stderr
        self._width = width

    def __call__(self, done: int, total: int) -> None:
        if total <= PROGRESS_MIN:
            return
        filled = self._width * done // total
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r[{bar}] {done}/{total}" + ("\n" if done >= total else ""))
        self._stream.flush()


def unlock_refused(namespace: str, queue: str, shard: int | None = None) -> str:
    """Why ``unlock`` needs ``--yes``."""
    which = "the leader lease of every shard" if shard is None else f"the leader lease of shard {shard}"
    return (
        f"unlock deletes {which} of {namespace}/{queue} whoever holds it. A live leader notices at its"
        " next renewal and stops, and another worker takes over; use it only when the lease is stuck."
        " `python -m ops recover` already removes a lease whose holder stopped renewing."
        " Run again with --yes to do it."
    )


def reset_refused(namespace: str) -> str:
    """Why ``reset`` needs ``--yes``."""
    return (
        f"reset deletes EVERY key of namespace {namespace!r}: waiting and pending callbacks, retries, dead letters,"
        " the lease, counters and the Dramatiq queues. Nothing of it can be recovered."
        " Run again with --yes to do it."
    )
