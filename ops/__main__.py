"""``python -m ops status|recover|unlock|reset|replay|inspect|config``: the operator commands.

Exit codes: 0 done, 1 refused or not found, 2 configuration error (settings, or Redis unreachable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import redis

from worker import redact
from worker.config.runtime import RUNTIME_VARIABLES, ConfigStore
from worker.config.settings import Settings
from worker.errors import SettingsError
from worker.streams.client import sync_client
from worker.streams.keys import Keys

from . import commands, render

Command = Callable[[argparse.Namespace, Settings, redis.Redis], int]


def parser() -> argparse.ArgumentParser:
    """The CLI; settings come from the environment (see the README), not from flags."""
    top = argparse.ArgumentParser(prog="python -m ops", description="Operator commands of the callback worker.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    sub.add_parser("status", parents=[common], help="queue health on one screen")
    sub.add_parser("recover", parents=[common], help="re-queue due retries and stuck entries, clear stale state")
    unlock = sub.add_parser("unlock", parents=[common], help="force-release the leader lease")
    unlock.add_argument("--yes", action="store_true", help="really do it")
    reset = sub.add_parser("reset", parents=[common], help="delete every key of the namespace")
    reset.add_argument("--yes", action="store_true", help="really do it")
    replay = sub.add_parser("replay", parents=[common], help="send dead letters back to the stream")
    replay.add_argument("--reason", metavar="SUBSTR", help="reason contains SUBSTR (case-insensitive)")
    replay.add_argument("--host", help="callback URL host (or host:port)")
    replay.add_argument("--older-than", type=float, metavar="SECONDS", help="dead for at least SECONDS")
    replay.add_argument("--newer-than", type=float, metavar="SECONDS", help="dead for at most SECONDS")
    replay.add_argument("--limit", type=int, metavar="N", help="at most N, oldest first")
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed, change nothing")
    inspect = sub.add_parser("inspect", parents=[common], help="find a callback by callback id or stream id")
    inspect.add_argument("id", metavar="ID", help="callback id (msg_...) or stream id (1700000000000-0)")
    config = sub.add_parser("config", parents=[common], help="run-time configuration: get, set or unset")
    config.add_argument("action", choices=("get", "set", "unset"))
    config.add_argument("items", nargs="*", metavar="NAME[=VALUE]", help="set: NAME=VALUE ...; unset: NAME ...")
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
        print(render.unlock_refused(settings.namespace, settings.queue), file=sys.stderr)
        return 1
    result = commands.unlock(client, settings)
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
    if args.limit is not None and args.limit < 0:
        print("--limit must be >= 0", file=sys.stderr)
        return 2
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
        config = store.load()
    else:
        try:
            changes = _assignments(args.items) if args.action == "set" else {}
            config = store.change(settings, changes, tuple(args.items) if args.action == "unset" else ())
        except SettingsError as e:
            print(f"refused, the configuration in force stays: {e}", file=sys.stderr)
            return 1
    shown = {"version": config.version, "values": config.shown(), "run_time_variables": list(RUNTIME_VARIABLES)}
    if args.json:
        print(render.as_json(shown))
    else:
        values = ", ".join(f"{k}={v}" for k, v in sorted(config.shown().items())) or "none (environment only)"
        print(f"run-time configuration version {config.version}: {values}")
    return 0


def _assignments(items: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SettingsError(f"{item!r} is not NAME=VALUE")
        pairs[name.strip()] = value
    if not pairs:
        raise SettingsError("nothing to set: give NAME=VALUE pairs")
    return pairs


COMMANDS: dict[str, Command] = {
    "status": _status,
    "recover": _recover,
    "unlock": _unlock,
    "reset": _reset,
    "replay": _replay,
    "inspect": _inspect,
    "config": _config,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env(signs=False)
    except SettingsError as e:
        print(f"configuration error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    client = sync_client(settings.redis_url)
    try:
        return COMMANDS[args.command](args, settings, client)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        print(f"Redis at {redact.url(settings.redis_url)} does not answer ({e}); check REDIS_URL.", file=sys.stderr)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
