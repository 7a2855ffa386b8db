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
            f"one of the {namespace}:{{{queue}}}:* keys holds the wrong kind of value (written by hand?): find it"
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
    """One screen: stream, group and consumers, retries, dead letters, leader, counters."""
    rows = [("queue", f"namespace {state['namespace']}, queue {state['queue']}")]
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
        text = f"{consumer['name']}: {consumer['pending']} pending, idle {duration(consumer['idle'])}{hint}"
        rows.append(("consumer", text))
    due = "" if state["next_due"] is None else f", next due in {duration(state['next_due'])}"
    rows.append(("retries", f"{state['delayed']} delayed{due}"))
    hint = "  (list them: python -m ops replay --dry-run)" if state["dead"] else ""
    rows.append(("dead", f"{state['dead']} dead letters{hint}"))
    rows.append(("leader", _leader(state["leader"])))
    counters = state["counters"]
    rows.append(("counters", "  ".join(f"{name} {value}" for name, value in counters.items())))
    last = state["last_send_ago"]
    rows.append(("last send", "never" if last is None else f"{duration(last)} ago"))
    rows.append(("db writer", _writer(state["writer"])))
    return "\n".join(printable(f"{label:<10} {text}") for label, text in rows)  # names and holders come from Redis


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
    """What recover did, one line per action."""
    lines = []
    if report.promoted:
        lines.append(f"moved {report.promoted} due retries from the delayed set to the stream")
    if report.handed_back:
        lines.append(f"handed {report.handed_back} entries pending > {duration(claim_idle)} back to the stream's tail")
    if report.dead_lettered:
        lines.append(f"dead-lettered {report.dead_lettered} poison entries (read too many times)")
    if report.stale_lease:
        lines.append(f"deleted the stale leader lease of {report.stale_lease} (it had stopped renewing)")
    if report.consumers_removed:
        lines.append(f"deleted idle consumers with nothing pending: {', '.join(report.consumers_removed)}")
    return "\n".join(lines) or "nothing to recover"


def unlock(result: dict[str, Any]) -> str:
    """The outcome of a forced lease release."""
    if not result["released"]:
        return "no leader lease was held; nothing to do"
    return (
        f"released the leader lease of {result['holder'] or 'an unknown holder'} (epoch {result['epoch'] or '?'}).\n"
        "warning: if that leader is alive it notices at its next renewal and stops taking new work;"
        " the next worker to try becomes leader."
    )


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
    for letter in matched:
        cid, url, reason = letter.get("cid", "?"), letter.get("url", "?"), letter.get("reason", "")
        lines.append(f"  {letter['stream_id']}  {cid}  {url}  dead {duration(letter['dead_age'])} ago: {reason}")
    return "\n".join(map(printable, lines))


def inspect(query: str, sightings: list[dict[str, Any]]) -> str:
    """Each place the callback was found, then its fields."""
    if not sightings:
        return f"{query}: not found in the stream, the delayed retries or the dead letters"
    blocks = []
    for sighting in sightings:
        place = {"stream": "in the stream", "delayed": "in the delayed retries", "dead": "in the dead letters"}
        head = f"{place[sighting['place']]}" + (f" as {sighting['stream_id']}" if sighting["stream_id"] else "")
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


def unlock_refused(namespace: str, queue: str) -> str:
    """Why ``unlock`` needs ``--yes``."""
    return (
        f"unlock deletes the leader lease of {namespace}/{queue} whoever holds it. A live leader notices at its"
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
