"""The operator commands' command line: the parser and what each argument may be (checked before anything runs)."""

from __future__ import annotations

import argparse
import math
import re
from typing import NoReturn

from worker.config.runtime import MAX_STORED_BYTES

from . import hosts

MAX_STREAM_ID_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit integers
MAX_ARGUMENT_CHARS = 200
MAX_PAUSE = 366 * 86400.0  # seconds: the longest `host pause --for` (longer: pause until resumed)
HOST_LIST = 50  # hosts `host list` shows unless --limit says otherwise


class UsageError(Exception):
    """A command line the parser refused: its one-line message."""


class _Parser(argparse.ArgumentParser):
    """argparse, raising :class:`UsageError` instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _count(text: str) -> int:
    """``--limit``, ``--shard``: an integer >= 0."""
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        raise argparse.ArgumentTypeError("not an integer >= 0")
    return int(text)


def _seconds(text: str) -> float:
    """``--older-than``/``--newer-than``: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("not a number of seconds >= 0")
    return value


def _text(text: str) -> str:
    """A free-text argument: at most 200 printable characters (no control characters, no undecodable bytes)."""
    if not text.isprintable() or len(text) > MAX_ARGUMENT_CHARS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_ARGUMENT_CHARS} printable characters")
    return text


def _pause_seconds(text: str) -> float:
    """``host pause --for``: seconds > 0, at most :data:`MAX_PAUSE`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_PAUSE:  # NaN fails too
        raise argparse.ArgumentTypeError(f"not a number of seconds > 0 and <= {MAX_PAUSE:.0f}")
    return value


def _host(text: str) -> str:
    """``host pause|resume HOST``: ``host:port`` or an http(s) URL, as the worker keys the host."""
    try:
        return hosts.target(text)
    except hosts.BadHost as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _item(text: str) -> str:
    """``config`` NAME or NAME=VALUE: bounded (the value is checked like the environment's, never echoed)."""
    if len(text) > MAX_STORED_BYTES:
        raise argparse.ArgumentTypeError(f"an item longer than {MAX_STORED_BYTES} characters")
    return text


def _callback_or_stream_id(text: str) -> str:
    """``inspect ID``: a callback id, or a stream id whose parts Redis accepts (ASCII digits, each < 2**64)."""
    if re.fullmatch(r"\d+(-\d+)?", text):
        parts = text.split("-")
        if not text.isascii() or any(len(part) > 20 or int(part) > MAX_STREAM_ID_PART for part in parts):
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: a stream id is MS-SEQ, ASCII digits, each part < 2**64")
    elif not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", text):  # ours are msg_ + hex; never echo anything else
        raise argparse.ArgumentTypeError("a callback id is letters, digits, '_', '.', ':' or '-' (msg_...)")
    return _text(text)


def parser() -> argparse.ArgumentParser:
    """The CLI; settings come from the environment (see the README), not from flags."""
    top = _Parser(prog="python -m ops", description="Operator commands of the callback worker.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    sub.add_parser("status", parents=[common], help="queue health on one screen")
    sub.add_parser("recover", parents=[common], help="re-queue due retries and stuck entries, clear stale state")
    unlock = sub.add_parser("unlock", parents=[common], help="force-release the leader lease of every shard, or one")
    unlock.add_argument("--yes", action="store_true", help="really do it")
    unlock.add_argument("--shard", type=_count, metavar="N", help="only shard N's lease (0 = the first)")
    reset = sub.add_parser("reset", parents=[common], help="delete every key of the namespace")
    reset.add_argument("--yes", action="store_true", help="really do it")
    replay = sub.add_parser("replay", parents=[common], help="send dead letters back to the stream")
    replay.add_argument("--reason", type=_text, metavar="SUBSTR", help="reason contains SUBSTR (case-insensitive)")
    replay.add_argument("--host", type=_text, help="callback URL host (or host:port)")
    replay.add_argument("--older-than", type=_seconds, metavar="SECONDS", help="dead for at least SECONDS")
    replay.add_argument("--newer-than", type=_seconds, metavar="SECONDS", help="dead for at most SECONDS")
    replay.add_argument("--limit", type=_count, metavar="N", help="at most N, oldest first")
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed, change nothing")
    inspect = sub.add_parser("inspect", parents=[common], help="find a callback by callback id or stream id")
    inspect.add_argument(
        "id", type=_callback_or_stream_id, metavar="ID", help="callback id (msg_...) or stream id (1700000000000-0)"
    )
    keys = sub.add_parser("keys", parents=[common], help="signing keys: generate an Ed25519 (v1a) key pair")
    keys.add_argument("action", choices=("generate",))
    config = sub.add_parser("config", parents=[common], help="run-time configuration: get, set or unset")
    config.add_argument("action", choices=("get", "set", "unset"))
    config.add_argument(
        "items", nargs="*", type=_item, metavar="NAME[=VALUE]", help="set: NAME=VALUE ...; unset: NAME ..."
    )
    host = sub.add_parser("host", help="receiving hosts: their learned pace and circuit; pause or resume one")
    actions = host.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="every host's pace, load and circuit, busiest first")
    limit = f"at most N (default {HOST_LIST}; 0: all)"
    listing.add_argument("--limit", type=_count, default=HOST_LIST, metavar="N", help=limit)
    target = _Parser(add_help=False)
    target.add_argument("host", type=_host, metavar="HOST", help="host:port, or a callback URL (https://host/...)")
    pause = actions.add_parser("pause", parents=[common, target], help="start none of a host's callbacks")
    pause.add_argument("--for", dest="seconds", type=_pause_seconds, metavar="SECONDS", help="default: until resumed")
    actions.add_parser("resume", parents=[common, target], help="end an operator's pause of a host")
    return top
