"""``python -m ops status|recover|unlock|reset|replay|inspect|config|keys|host``: the operator commands.

Exit codes: 0 done, 1 refused or not found, 2 configuration error (settings, or Redis unreachable)
or a malformed command line. Whatever went wrong, it is said in one line on stderr, never as a
traceback: arguments are checked by the parser, and the project's errors and Redis' error replies
(a key of the wrong type, an id Redis refuses) are caught here, at the boundary.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import redis

from worker import redact
from worker.config.runtime import RUNTIME_VARIABLES, ConfigStore, Unreadable
from worker.config.settings import Settings
from worker.delivery import ed25519
from worker.errors import SettingsError, WorkerError
from worker.streams.client import sync_client
from worker.streams.keys import Keys

from . import commands, hosts, render, render_hosts
from .arguments import UsageError, parser

Command = Callable[[argparse.Namespace, Settings, redis.Redis], int]


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
