"""A callback as it travels through the stream, the delayed set and the dead-letter stream.

Entries come from Redis, where anything may have written anything: :func:`decode`
and :func:`decode_member` never raise. They return a :class:`CallbackEntry`, or
a :class:`Malformed` with the reason and the fields as received (made printable
and capped), which the leader sets aside in the dead-letter stream while the
good entries of the same batch go on.

A callback's **generation** counts how often an operator replayed it from the
dead letters (field ``gen``, absent: 0, so entries of earlier versions stay
valid). A replay (:func:`replay_of`) starts the next generation with its
attempts reset and keeps the dead-letter record it leaves behind in ``hist``:
a JSON array of ``{"gen", "reason", "status", "error", "dead_ms", "att",
"replayed_ms"}`` objects, oldest first, the last :data:`MAX_HISTORY` only
(read back by :func:`past_generations`). The generation travels into every
status update, so the database tells one generation's outcome from the next.

A callback may wait for a **status entry** (field ``after``, absent: no wait):
the id of shard 0's status stream entry holding its image task's final update
(``CALLBACK_AFTER_COMMIT``). Its first attempt waits until the status writer's
committed mark covers that id (:mod:`worker.engine.intake`); retries and
replays do not wait (the row was committed before the first attempt), so
:meth:`CallbackEntry.next_attempt` and :func:`replay_of` drop it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

MAX_ID_CHARS = 200  # callback and task ids: ours are 36 characters; producers' task ids are short
MAX_URL_CHARS = 2048
MAX_COUNTER = 10**15  # attempts and epoch milliseconds fit well below this
MAX_STREAM_ID_PART = 2**64 - 1  # each half of a Redis stream id ("ms-seq") is a 64-bit unsigned integer
RAW_FIELD_CHARS = 1024  # of each field of a malformed record, kept for the operator
RAW_FIELDS = 32
MAX_HISTORY = 10  # past generations an entry keeps (the newest); each replay is an operator's act
HISTORY_TEXT_CHARS = 300  # of a past generation's reason and error
DEAD_LETTER_FIELDS = ("reason", "status", "error", "dead_ms")
COUNTERS = ("att", "t0", "tq", "gen")  # the integer fields, absent: 0  # what dead-lettering adds to the entry's fields


@dataclass(frozen=True)
class CallbackEntry:
    """One callback: its id, target, JSON body and delivery history so far.

    ``attempts`` counts the HTTP attempts already made; ``first_enqueued_ms``
    is when the producer accepted it, ``enqueued_ms`` when this copy was
    (re)queued. ``stream_id`` is the id of the stream entry carrying it, when
    it was read from the stream. ``generation`` counts the replays from the
    dead letters, ``history`` holds the dead-letter records of the earlier
    generations (JSON, see the module docstring; carried as it came).
    ``after`` is the status entry its first attempt waits for (see the module
    docstring). Field names in Redis are short: every byte repeats in every
    entry, and ``gen``/``hist``/``after`` appear only when set.
    """

    callback_id: str
    url: str
    body: str
    task_id: str | None = None
    attempts: int = 0
    first_enqueued_ms: int = 0
    enqueued_ms: int = 0
    stream_id: str | None = None
    generation: int = 0
    history: str | None = None
    after: str | None = None

    def fields(self) -> dict[str, str]:
        """Stream entry fields (the stream id is not a field)."""
        out = {
            "cid": self.callback_id,
            "url": self.url,
            "body": self.body,
            "att": str(self.attempts),
            "t0": str(self.first_enqueued_ms),
            "tq": str(self.enqueued_ms),
        }
        if self.task_id is not None:
            out["task"] = self.task_id
        if self.generation:
            out["gen"] = str(self.generation)
        if self.history is not None:
            out["hist"] = self.history
        if self.after is not None:
            out["after"] = self.after
        return out

    @classmethod
    def from_fields(cls, stream_id: str | None, raw: Mapping[Any, Any]) -> CallbackEntry:
        """Decode stream fields (bytes or str keys and values); raises ``ValueError`` if malformed."""
        decoded = decode(stream_id, raw)
        if isinstance(decoded, Malformed):
            raise ValueError(decoded.reason)
        return decoded

    def member(self) -> str:
        """The JSON form kept in the delayed set; unique per callback, generation and attempt."""
        return json.dumps(self.fields(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_member(cls, member: str | bytes) -> CallbackEntry:
        """Decode a delayed-set member; raises ``ValueError`` if malformed."""
        decoded = decode_member(member)
        if isinstance(decoded, Malformed):
            raise ValueError(decoded.reason)
        return decoded

    def next_attempt(self) -> CallbackEntry:
        """The entry after one more failed attempt (still carried by the same stream entry); it waits for nothing."""
        return replace(self, attempts=self.attempts + 1, after=None)


@dataclass(frozen=True)
class Malformed:
    """A record that is not a callback: why, and its fields as received (printable, capped)."""

    stream_id: str | None
    reason: str
    fields: dict[str, str]

    def dead_fields(self, now_ms: int) -> dict[str, str]:
        """Its record in the dead-letter stream: the raw fields beside reason and time."""
        kept = {f"raw.{name}": value for name, value in self.fields.items()}
        return {**kept, "reason": f"malformed: {self.reason}", "status": "", "error": "", "dead_ms": str(now_ms)}


def decode(stream_id: str | None, raw: Mapping[Any, Any]) -> CallbackEntry | Malformed:
    """A stream entry's fields as a :class:`CallbackEntry`, or :class:`Malformed` saying why not. Never raises."""
    fields = _all_text(raw)
    if fields is None:  # not the leader's usual dict of str: check field by field
        try:
            fields = {_text(k): _text(v) for k, v in raw.items()}
        except (AttributeError, TypeError):
            return Malformed(stream_id, "fields are not a mapping of strings", {})
        except UnicodeError:
            return Malformed(stream_id, "a field is not UTF-8 text", _printable(raw))
    checked = _checked(fields)
    if isinstance(checked, str):
        return Malformed(stream_id, checked, _printable(fields))
    attempts, first_enqueued_ms, enqueued_ms, generation = checked
    return CallbackEntry(
        fields["cid"],
        fields["url"],
        fields["body"],
        fields.get("task"),
        attempts,
        first_enqueued_ms,
        enqueued_ms,
        stream_id,
        generation,
        fields.get("hist"),
        fields.get("after"),
    )


def decode_member(member: str | bytes) -> CallbackEntry | Malformed:
    """A delayed-set member (a JSON object of stream fields), or :class:`Malformed`. Never raises."""
    try:
        data = json.loads(member)
    except (ValueError, RecursionError, UnicodeError):
        return Malformed(None, "a delayed member is not JSON", {"member": _cap(_lenient(member))})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return Malformed(None, "a delayed member is not a JSON object of strings", {"member": _cap(_lenient(member))})
    return decode(None, data)


def replayed(stream_id: str, raw: Mapping[Any, Any], now_ms: int) -> tuple[dict[Any, Any], CallbackEntry | None]:
    """What dead letter ``raw`` (its fields as read) goes back to the stream as: fields, and the callback they carry.

    A callback goes back as its next generation (:func:`replay_of`). A record
    that is not one (an entry set aside as malformed) goes back as it was, less
    the dead-letter fields, to be judged again; its callback is ``None``.
    """
    letter = decode(stream_id, raw)
    if isinstance(letter, Malformed):
        dropped = {*DEAD_LETTER_FIELDS, "att", "tq"}
        kept = {name: value for name, value in raw.items() if _lenient(name) not in dropped}
        return {**kept, "att": "0", "tq": str(now_ms)}, None
    dead = {_lenient(name): _lenient(value) for name, value in raw.items() if _lenient(name) in DEAD_LETTER_FIELDS}
    entry = replay_of(letter, dead, now_ms)
    return entry.fields(), entry


def replay_of(letter: CallbackEntry, dead: Mapping[str, str], now_ms: int) -> CallbackEntry:
    """The callback that dead letter ``letter`` goes back to the stream as: its next generation.

    Attempts start again, ``tq`` is ``now_ms``, and the dead-letter record it
    leaves (``dead``: its reason, status, error, dead_ms) joins its history.
    """
    record = {
        "gen": letter.generation,
        "att": letter.attempts,
        **{name: str(dead.get(name, ""))[:HISTORY_TEXT_CHARS] for name in DEAD_LETTER_FIELDS},
        "replayed_ms": now_ms,
    }
    kept = [*past_generations(letter.history), record][-MAX_HISTORY:]
    return replace(
        letter,
        attempts=0,
        enqueued_ms=now_ms,
        stream_id=None,
        generation=letter.generation + 1,
        history=json.dumps(kept, separators=(",", ":")),  # ASCII: lone surrogates cannot reach Redis
        after=None,  # its first generation was attempted: the row it waited for was committed then
    )


def past_generations(history: str | None) -> list[dict[str, int | str]]:
    """The dead-letter records of a callback's earlier generations, oldest first; ``[]`` if none or unreadable.

    Anything may have written ``hist``: only integers and text (made printable, capped) are kept.
    """
    if not history:
        return []
    try:
        records = json.loads(history)
    except (ValueError, RecursionError):
        return []
    if not isinstance(records, list):
        return []
    return [_record(record) for record in records[-MAX_HISTORY:] if isinstance(record, dict)]


def _record(raw: dict[Any, Any]) -> dict[str, int | str]:
    record: dict[str, int | str] = {}
    for name, value in list(raw.items())[:RAW_FIELDS]:
        if isinstance(value, str):
            record[_cap(_lenient(name))[:64]] = _cap(_lenient(value))[:HISTORY_TEXT_CHARS]
        elif isinstance(value, int) and not isinstance(value, bool):
            record[_cap(_lenient(name))[:64]] = value
    return record


def id_problem(value: str) -> str | None:
    """What is wrong with a callback or task id (``None``: nothing): 1-200 printable characters."""
    if not 0 < len(value) <= MAX_ID_CHARS or not value.isprintable():
        return f"must be 1-{MAX_ID_CHARS} printable characters (no control, NUL, formatting or surrogate characters)"
    return None


def stream_id_problem(value: str) -> str | None:
    """What is wrong with a Redis stream id (``None``: nothing): ``<ms>-<seq>``, two 64-bit unsigned integers."""
    ms, dash, seq = value.partition("-")
    for part in (ms, seq):
        if not (dash and 0 < len(part) <= 20 and part.isascii() and part.isdigit()) or int(part) > MAX_STREAM_ID_PART:
            return "is not a stream id (<ms>-<seq>, two unsigned 64-bit integers)"
    return None


def _checked(fields: dict[str, str]) -> tuple[int, int, int, int] | str:
    """The counters ``att``, ``t0``, ``tq``, ``gen`` of valid fields (each parsed once), or what is wrong."""
    for name in ("cid", "url", "body"):
        if name not in fields:
            return f"no {name!r} field"
    for name in ("cid", "task"):
        value = fields.get(name)
        if value is not None and (problem := id_problem(value)):
            return f"{name!r} {problem}"
    after = fields.get("after")
    if after is not None and (problem := stream_id_problem(after)):
        return f"'after' {problem}"
    url = fields["url"]
    if len(url) > MAX_URL_CHARS or not url.startswith(("http://", "https://")) or not url.isprintable():
        return "'url' is not an http(s) URL of printable characters"
    counters = []
    for name in COUNTERS:
        value = fields.get(name, "0")
        if not (0 < len(value) <= 16 and value.isascii() and value.isdigit()) or (number := int(value)) > MAX_COUNTER:
            return f"{name!r} is not a non-negative integer"
        counters.append(number)
    attempts, first_enqueued_ms, enqueued_ms, generation = counters
    return attempts, first_enqueued_ms, enqueued_ms, generation


def _all_text(raw: Any) -> dict[str, str] | None:
    """``raw`` itself when it is a dict of UTF-8 ``str`` (what the leader's decoding client reads), else ``None``.

    Two joins and one encode in C instead of a check per field: ``join`` refuses
    anything but ``str``, and ``encode`` refuses lone surrogates (bytes that were
    not UTF-8, decoded with ``surrogateescape``).
    """
    if type(raw) is not dict:
        return None
    try:
        ("".join(raw) + "".join(raw.values())).encode()
    except (TypeError, UnicodeError):
        return None
    return raw


def _text(value: Any) -> str:
    """``str`` of a reply value; bytes must be UTF-8, and so must ``str`` (no lone surrogates)."""
    if isinstance(value, bytes):
        return value.decode()
    if not isinstance(value, str):
        raise TypeError(type(value).__name__)
    value.encode()  # a str decoded with surrogateescape carries the undecodable bytes as surrogates
    return value


def _lenient(value: Any) -> str:
    """Any value as printable-able text: undecodable bytes (raw or surrogate-escaped) become U+FFFD."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    text = str(value)
    try:
        return text.encode(errors="surrogateescape").decode(errors="replace")
    except UnicodeError:  # a lone surrogate outside the escape range
        return text.encode(errors="replace").decode()


def _cap(value: str) -> str:
    shown = "".join(ch if ch.isprintable() else "\ufffd" for ch in value[:RAW_FIELD_CHARS])
    return shown + ("…" if len(value) > RAW_FIELD_CHARS else "")


def _printable(raw: Mapping[Any, Any]) -> dict[str, str]:
    items = list(raw.items())[:RAW_FIELDS]
    return {_cap(_lenient(k))[:64]: _cap(_lenient(v)) for k, v in items}
