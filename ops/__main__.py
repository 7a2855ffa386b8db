"""``python -m ops status|recover|unlock|reset|replay|inspect|config|keys|host``: the operator commands.

Exit codes: 0 done, 1 refused or not found, 2 configuration error (settings, or Redis unreachable)
or a malformed command line. Whatever went wrong, it is said in one line on stderr, never as a
traceback: arguments are checked by the parser, and the project's errors and Redis' error replies
(a key of the wrong type, an id Redis refuses) are caught here, at the boundary.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import redis

from worker import redact
from worker.config.runtime import MAX_STORED_BYTES, RUNTIME_VARIABLES, ConfigStore, Unreadable
from worker.config.settings import Settings
from worker.delivery import ed25519
from worker.errors import SettingsError, WorkerError
from worker.streams.client import sync_client
from worker.streams.keys import Keys

from . import commands, hosts, render, render_hosts

Command = Callable[[argparse.Namespace, Settings, redis.Redis], int]
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


def _status(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    state = commands.status(client, settings)
    print(render.as_json(state) if args.json else render.status(state, settings.claim_idle))
    return 0


def _recover(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    report = commands.recover(client, settings)
    print(render.as_json(report) if args.json else render.recover(report, settings.claim_idle))
    return 0


def _unlock(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    if not args.yes:
        print(render.unlock_refused(settings.namespace, settings.queue, args.shard), file=sys.stderr)
        return 1
    result = commands.unlock(client, settings, args.shard)
    print(render.as_json(result) if args.json else render.unlock(result))
    return 0


def _reset(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    if not args.yes:
        print(render.reset_refused(settings.namespace), file=sys.stderr)
        return 1
    result = commands.reset(client, settings)
    print(render.as_json(result) if args.json else render.reset(result, settings.namespace))
    return 0


def _replay(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    selection = commands.ReplayFilter(args.reason, args.host, args.older_than, args.newer_than, args.limit)
    progress = None if args.json else render.ProgressBar()
    result = commands.replay(client, settings, selection, dry_run=args.dry_run, progress=progress)
    print(render.as_json(result) if args.json else render.replay(result))
    return 0


def _inspect(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    sightings = commands.inspect(client, settings, args.id)
    print(render.as_json(sightings) if args.json else render.inspect(args.id, sightings))
    return 0 if sightings else 1


def _config(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    store = ConfigStore(client, Keys(settings.namespace, settings.queue))
    if args.action == "get":
        found = store.load()
        if isinstance(found, Unreadable):
            print(render.one_line(found.problem(store.key)), file=sys.stderr)
            return 1
        config = found
    else:
        try:
            if args.action == "set":
                config = store.change(settings, _assignments(args.items))
            else:
                config = store.change(settings, {}, _names(args.items))
        except SettingsError as e:
            print(render.one_line(f"refused, the configuration in force stays: {e}"), file=sys.stderr)
            return 1
    shown = {"version": config.version, "values": config.shown(), "run_time_variables": list(RUNTIME_VARIABLES)}
    if args.json:
        print(render.as_json(shown))
    else:
        values = ", ".join(f"{k}={v}" for k, v in sorted(config.shown().items())) or "none (environment only)"
        print(render.one_line(f"run-time configuration version {config.version}: {values}"))
    return 0


def _host_command(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    if args.action == "list":
        listed = hosts.listing(client, settings, args.limit)
        print(render.as_json(listed) if args.json else render_hosts.host_list(listed))
        return 0
    if args.action == "pause":
        result = hosts.pause(client, settings, args.host, args.seconds)
        text = render_hosts.host_paused(result, settings.max_delay)
    else:
        result = hosts.resume(client, settings, args.host)
        text = render_hosts.host_resumed(result, settings.max_delay)
        if not result["resumed"]:
            print(render.one_line(text), file=sys.stderr)
            return 1
    print(render.as_json(result) if args.json else text)
    return 0


def _assignments(items: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for number, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if not sep:  # not echoed: a value without its name may well be a secret
            raise SettingsError(f"argument {number} of set is not NAME=VALUE")
        pairs[name.strip()] = value
    if not pairs:
        raise SettingsError("nothing to set: give NAME=VALUE pairs")
    return pairs


def _names(items: Sequence[str]) -> tuple[str, ...]:
    if not items:
        raise SettingsError("nothing to unset: give the NAMEs to unset")
    if any("=" in item for item in items):  # NAME=VALUE given to unset: the value is not echoed either
        raise SettingsError("unset takes NAMEs, not NAME=VALUE")
    return tuple(item.strip() for item in items)


def _masked(message: str, argv: Sequence[str]) -> str:
    """A usage error without the arguments it quotes that may be secrets (``NAME=VALUE`` in the wrong place)."""
    for token in sorted(set(argv), key=len, reverse=True):
        if token in message and ("=" in token or "whsec_" in token or "@" in token or len(token) > 40):
            name, sep, _ = token.partition("=")
            keep = sep and (name.isupper() or name.startswith("-"))  # NAME=... or --flag=...: the name helps
            message = message.replace(token, f"{name}=<redacted>" if keep else "<redacted>")
    return message


def _keys(args: argparse.Namespace, settings: Settings, client: redis.Redis) -> int:
    secret, public = ed25519.generate()
    if args.json:
        print(render.as_json({"CALLBACK_SIGNING_KEY": secret, "public_key": public}))
    else:
        print(f"CALLBACK_SIGNING_KEY={secret}")
        print(f"public key, for receivers to verify v1a signatures with: {public}")
    return 0


COMMANDS: dict[str, Command] = {
    "status": _status,
    "recover": _recover,
    "unlock": _unlock,
    "reset": _reset,
    "replay": _replay,
    "inspect": _inspect,
    "config": _config,
    "keys": _keys,
    "host": _host_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    try:
        args = parser().parse_args(argv)
    except UsageError as e:
        print(render.one_line(_masked(str(e), sys.argv[1:] if argv is None else argv)), file=sys.stderr)
        return 2
    except SystemExit as e:  # --help printed the help
        return e.code if isinstance(e.code, int) else 0
    try:
        settings = Settings.from_env(signs=False)
    except SettingsError as e:
        print(render.one_line(f"configuration error: {e}"), file=sys.stderr)
        return 2
    client = sync_client(settings.redis_url)
    try:
        return COMMANDS[args.command](args, settings, client)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        where = redact.url(settings.redis_url)
        print(render.one_line(f"Redis at {where} does not answer ({e}); check REDIS_URL."), file=sys.stderr)
        return 2
    except redis.ResponseError as e:
        print(render.one_line(render.redis_refusal(e, settings.namespace, settings.queue)), file=sys.stderr)
        return 1
    except WorkerError as e:
        print(render.one_line(f"{args.command} failed: {e}"), file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
