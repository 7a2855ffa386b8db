"""Status updates: the cheap, durable record of what happened, applied to the database later.

Producers of updates (the producer API, the leader, image tasks) never touch
the database: they append updates to the status stream (``Keys.status_updates``),
many per stream entry, and the status writer actor coalesces them into batched
statements. One entry's field ``u`` holds a JSON array of updates::

    {"table": "callbacks", "key": "msg_...", "at": 1700000000123, "fields": {...}}

or, for a batch of newly enqueued callbacks, the compact ``{"queued": [[id,
url, task_id], ...], "at": ms}`` (see :func:`encode_queued`).

Decoding (:func:`decode`) is per item, not all-or-nothing: one malformed update
in an entry carrying a hundred must not cost the other ninety-nine. What cannot
be used is kept (as received, with the reason) for the ``status:bad`` stream
(:func:`bad_record`).

``table`` is one of ``callbacks``, ``callback_attempts``, ``image_edit_tasks``.
``key`` is the row's identity (callback id; task id; for attempt ``n``
``"<callback id>:<n>"`` in generation 0 and ``"<callback id>:g<gen>:<n>"`` in a
later one, see :func:`attempt_key`). ``fields`` hold column values; times are
epoch milliseconds. Applying updates in stream order, field by field, gives the
row: the writer's merge rules (terminal states stick within a generation,
counters never decrease) make replays and out-of-order duplicates harmless.

A callback's updates carry its ``generation`` (the replay count,
:mod:`worker.streams.entry`) only when it is not 0, so the updates of a callback
never replayed, the producer's compact form included, are what they always were.

**The committed mark** (``Keys.status_committed``, ``CALLBACK_AFTER_COMMIT``):
the status writer of shard 0 moves it forward after every commit and ack
(``commit_mark.lua``, :func:`publish_committed`); every entry of shard 0's
status stream at or below it is in the database. Image tasks' updates always
go to shard 0's stream, so a callback that waits for its task's final update
(entry field ``after``) may go once :func:`covers` says the mark is past it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from .client import text
from .groups import id_order
from .keys import STATUS_GROUP
from .protocol import Command, Operation, Script

if TYPE_CHECKING:
    import redis

    from .keys import Keys

CALLBACK_STATES = ("queued", "sending", "retrying", "delivered", "dead")
TERMINAL_CALLBACK_STATES = frozenset({"delivered", "dead"})
MAX_ERROR_CHARS = 1000  # of a ``status:bad`` record's reasons
MAX_RAW_CHARS = 100_000  # of an unusable entry, kept in status:bad
_DIGITS_AS_ZERO, _LONG_NUMBER = bytes.maketrans(b"123456789", b"000000000"), b"0" * 19
MALFORMED = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RecursionError,
    OverflowError,  # an integer too large for a float column
)  # what decoding (or a check) raises on a bad item


def now_ms() -> int:
    """The wall clock in epoch milliseconds, the unit of every status update's times."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class StatusUpdate:
    """One change to one row."""

    table: str
    key: str
    at: int
    fields: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The wire form (see the module docstring)."""
        return {"table": self.table, "key": self.key, "at": self.at, "fields": self.fields}


def encode(updates: Iterable[StatusUpdate]) -> str:
    """The ``u`` field of one status stream entry."""
    return json.dumps([u.as_json() for u in updates], separators=(",", ":"))


def encode_queued(callbacks: Iterable[tuple[str, str, str | None]], at: int) -> str:
    """The ``u`` field for a batch of newly queued callbacks ``(id, url, task_id)``, in the compact form.

    One item ``{"queued": [[id, url, task_id], ...], "at": ms}`` instead of an
    object per callback: the producer's hot path encodes a tenth of the JSON.
    """
    return json.dumps([{"queued": [list(c) for c in callbacks], "at": at}], separators=(",", ":"))


def expand_queued(item: dict[str, Any]) -> list[StatusUpdate]:
    """The updates a compact ``queued`` item stands for; raises ``ValueError`` if it is malformed."""
    at, rows = item.get("at"), item.get("queued")
    if isinstance(at, bool) or not isinstance(at, int) or not isinstance(rows, list):
        raise ValueError("a 'queued' item needs integer 'at' and a list 'queued'")
    out = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str) and isinstance(row[1], str)):
            raise ValueError(f"a queued callback is [id, url, task_id], got {row!r}")
        out.append(callback_queued(row[0], row[1], row[2] if isinstance(row[2], str) else None, at))
    return out


class Decoded(NamedTuple):
    """One status entry's updates, the items set aside with why, and ``raw`` (the entry, when unusable as a whole)."""

    updates: list[StatusUpdate]
    rejected: list[tuple[Any, str]]
    raw: str | None


def decode(fields: Mapping[Any, Any], check: Callable[[StatusUpdate], object] = lambda update: None) -> Decoded:
    """The updates of one status stream entry's fields (bytes or str keys); never raises.

    An item that is malformed, or one of whose updates ``check`` refuses (by
    raising ``ValueError``, ``TypeError``, ``KeyError`` or ``AttributeError``),
    is set aside with the reason; the other items are kept.
    """
    raw = fields.get(b"u", fields.get("u"))
    if raw is None:
        whole = json.dumps({text(k): text(v) for k, v in fields.items()})
        return Decoded([], [(None, "entry has no 'u' field")], whole)
    try:
        items = loads(raw)
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, or nested past the parser's depth
        return Decoded([], [(None, f"not a JSON array of updates ({type(e).__name__})")], text(raw)[:MAX_RAW_CHARS])
    if not isinstance(items, list):
        return Decoded([], [(None, "not a JSON array of updates")], text(raw)[:MAX_RAW_CHARS])
    decoded = Decoded([], [], None)
    for item in items:
        try:
            updates = expand_queued(item) if isinstance(item, dict) and "queued" in item else [decode_update(item)]
            for update in updates:
                check(update)
        except MALFORMED as e:
            decoded.rejected.append((item, f"{type(e).__name__}: {e}"))
            continue
        decoded.updates.extend(updates)
    return decoded


def loads(raw: str | bytes) -> Any:
    """``json.loads(raw)``, faster where ``orjson`` parses the same value (bytes, as Redis returns them).

    Where the two could differ, the standard library decides: anything orjson
    refuses (lone surrogates, NaN, numbers past a double, nesting past 1,024),
    and any run of 19 digits (orjson reads an integer past 64 bits as a float;
    a long number inside a string only costs the faster parser).
    """
    if isinstance(raw, bytes) and _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def decode_update(item: Any) -> StatusUpdate:
    """One update from its wire form; raises ``ValueError`` (or another of :data:`MALFORMED`) if it is malformed."""
    if not isinstance(item, dict):
        raise ValueError("an update is a JSON object")
    fields = item.get("fields") or {}
    if not isinstance(fields, dict):
        raise ValueError("'fields' must be an object")
    at = item["at"]
    if isinstance(at, bool) or not isinstance(at, int):
        raise ValueError(f"'at' must be integer epoch milliseconds, got {at!r}")
    return StatusUpdate(str(item["table"]), str(item["key"]), at, dict(fields))


def bad_record(stream_id: str, rejected: Sequence[tuple[Any, str]], raw: str | None) -> dict[str, str]:
    """The ``status:bad`` record of entry ``stream_id``: ``u`` as received (or the items set aside), why, the id."""
    try:
        body = raw if raw is not None else json.dumps([i for i, _ in rejected], separators=(",", ":"), default=repr)
    except (ValueError, RecursionError):
        body = "<the items set aside nest too deeply to be shown>"
    reasons = "; ".join(dict.fromkeys(why for _, why in rejected))
    return {"id": stream_id, "error": reasons[:MAX_ERROR_CHARS], "u": body}


def attempt_key(callback_id: str, generation: int, attempt: int) -> str:
    """The ``callback_attempts`` key of attempt ``attempt`` (1-based) of ``callback_id``'s generation ``generation``.

    Generation 0 keeps the form rows of earlier versions have; later generations
    name theirs, so a replayed callback's attempts never overwrite earlier ones.
    """
    return f"{callback_id}:{attempt}" if generation == 0 else f"{callback_id}:g{generation}:{attempt}"


def callback_queued(callback_id: str, url: str, task_id: str | None, at: int, generation: int = 0) -> StatusUpdate:
    """A callback was accepted by the producer (generation 0), or replayed from the dead letters (a later one)."""
    row = {"task_id": task_id, "url": url, "status": "queued", "attempts": 0, "created_at": at, "updated_at": at}
    return StatusUpdate("callbacks", callback_id, at, _generation(row, generation))


def callback_sending(callback_id: str, attempt: int, at: int, generation: int = 0) -> StatusUpdate:
    """Attempt ``attempt`` (1-based) of generation ``generation`` is starting."""
    row = {"status": "sending", "attempts": attempt, "updated_at": at}
    return StatusUpdate("callbacks", callback_id, at, _generation(row, generation))


def callback_attempted(
    callback_id: str,
    *,
    attempt: int,
    state: str,
    status_code: int | None,
    error: str | None,
    started_at: int,
    duration_ms: float,
    outcome: str,
    next_attempt_at: int | None,
    at: int,
    generation: int = 0,
) -> list[StatusUpdate]:
    """An attempt of generation ``generation`` ended: the callback's new state and the attempt's own row."""
    row = {
        "status": state,
        "attempts": attempt,
        "last_status_code": status_code,
        "last_error": error,
        "next_attempt_at": next_attempt_at,
        "updated_at": at,
    }
    if state == "delivered":
        row["delivered_at"] = at
    attempt_row = {
        "callback_id": callback_id,
        "attempt": attempt,
        "started_at": started_at,
        "duration_ms": round(duration_ms, 3),
        "status_code": status_code,
        "error": error,
        "outcome": outcome,
    }
    return [
        StatusUpdate("callbacks", callback_id, at, _generation(row, generation)),
        StatusUpdate("callback_attempts", attempt_key(callback_id, generation, attempt), at, attempt_row),
    ]


def callback_poisoned(callback_id: str, reason: str, at: int, generation: int = 0) -> StatusUpdate:
    """A callback of generation ``generation`` was dead-lettered without an attempt's outcome (poison, expired)."""
    return StatusUpdate("callbacks", callback_id, at, _generation({"status": "dead", "last_error": reason}, generation))


def _generation(row: dict[str, Any], generation: int) -> dict[str, Any]:
    if generation:
        row["generation"] = generation
    return row


def record_status(updates: Iterable[StatusUpdate], client: redis.Redis, keys: Keys) -> str | None:
    """Append ``updates`` to the status stream as ONE entry; returns its id (``None`` if there were none).

    For callers outside the leader's settle script (immediate delivery, tools).
    A retried XADD may record the same updates twice, which the writer's merge
    rules make harmless. Raises ``redis.RedisError`` when Redis does not take it.
    """
    batch = list(updates)
    if not batch:
        return None
    return text(client.xadd(keys.status_updates, {"u": encode(batch)}))


def covers(mark: str | None, stream_id: str) -> bool:
    """Whether committed mark ``mark`` (as read; ``None``: none yet) is at or past status entry ``stream_id``."""
    if mark is None:
        return False
    try:
        return id_order(stream_id) <= id_order(mark)
    except ValueError:  # not a stream id (a mark someone else wrote): nothing is covered until the writer's next
        return False


def committed(keys: Keys) -> Operation[str | None]:
    """The committed mark of the namespace's queue (shard 0's status stream); ``None`` before the first."""
    mark = yield Command("get", (keys.status_committed,))
    return None if mark is None else text(mark)


def publish_committed(keys: Keys, stream_id: str) -> Operation[str | None]:
    """Move the committed mark forward to ``stream_id``, just committed and acked (never back; see ``commit_mark.lua``).

    An older entry of shard 0's status stream still pending in the writers'
    group keeps the mark below it. Returns the mark after the call.
    """
    home = keys.of_shard(0)
    mark = yield Script("commit_mark", (home.status_committed, home.status_updates), (STATUS_GROUP, stream_id))
    return None if not mark else text(mark)
