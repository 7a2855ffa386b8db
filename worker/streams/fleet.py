"""The fleet: which worker processes of a namespace are alive, and how many shards each leads.

Every worker process's lease watch writes its own field of the ``fleet`` hash
(``host:pid`` -> ``<shards led>:<ms>``) once per look, and removes it when the
process stops. A field not refreshed for ``LIVE_WITHIN_MS`` is a process that
died; readers ignore it and the next beat of any process deletes it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Generator, Mapping
from typing import Any

from .client import text
from .keys import Keys
from .protocol import Batch, Command

LIVE_WITHIN_MS = 10_000  # a process refreshes its field at least every second while it runs


def process_name() -> str:
    """This process in the fleet: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def live(fields: Mapping[str, str], now_ms: int, within_ms: int = LIVE_WITHIN_MS) -> dict[str, int]:
    """The processes of a ``fleet`` hash seen within ``within_ms``: name -> shards led (bad fields are skipped)."""
    alive = {}
    for name, value in fields.items():
        led, _, at = value.partition(":")
        if led.isdigit() and at.isdigit() and now_ms - int(at) <= within_ms:
            alive[name] = int(led)
    return alive


def beat(keys: Keys, name: str, led: int, now_ms: int) -> Generator[Batch, Any, dict[str, int]]:
    """Operation: say that process ``name`` leads ``led`` shards; returns the live fleet (``name`` included)."""
    replies = yield Batch((Command("hset", (keys.fleet, name, f"{led}:{now_ms}")), Command("hgetall", (keys.fleet,))))
    fields = {text(k): text(v) for k, v in (replies[1] or {}).items()}
    alive = live(fields, now_ms)
    gone = [field for field in fields if field not in alive]
    if gone:
        yield Batch((Command("hdel", (keys.fleet, *gone)),))
    return alive


def leave(keys: Keys, name: str) -> Generator[Command, Any, None]:
    """Operation: process ``name`` stops."""
    yield Command("hdel", (keys.fleet, name))
