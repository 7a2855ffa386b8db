"""Run-time configuration: settings changed in Redis, applied by every process without a restart.

The older system's ``reload_worker_config``. A few variables (rates, batching,
per-host concurrency, signing secrets, immediate mode, image stages) may be
overridden at run time; the overrides live in one Redis key with a version:

    {"version": 7, "values": {"CALLBACK_RATE": "150", "IMAGE_STAGES": "validate,resize,format"}}

``python -m ops config get|set|unset`` reads and writes it. A change is
validated exactly like the environment (same parsers, same cross-field rules,
known image stages) before it is stored, and again by each process before it
is applied: an invalid change is refused with a clear error and the old
configuration stays. Processes follow it with a :class:`RuntimeFollower`: the
leader looks at the version four times a second and reconfigures in place;
image tasks look before each task.

Anything may be written to the key by hand: :func:`parse` never raises but says
what is wrong (:class:`Unreadable`); followers then keep the configuration in
force, logging it once, and ``ops config set`` replaces the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from ..errors import SettingsError, WorkerError
from ..redact import printable
from ..streams.keys import Keys
from ..streams.protocol import AsyncDriver, Command, Operation, SyncDriver
from ..streams.scripts import source
from .settings import Settings
from .variables import REDACTED, VARIABLES, parse_value

log = logging.getLogger(__name__)

RUNTIME_VARIABLES = (
    "CALLBACK_RATE",
    "CALLBACK_BATCH_SIZE",
    "CALLBACK_MIN_INTERVAL",
    "CALLBACK_HOST_CONCURRENCY",
    "CALLBACK_HOST_RATE",
    "CALLBACK_HOST_RATES",
    "CALLBACK_SIGNING_SECRET",
    "CALLBACK_SIGNING_SECRETS",
    "CALLBACK_IMMEDIATE",
    "IMAGE_STAGES",
)
MAX_STORED_BYTES = 64 * 1024  # signing secrets by prefix are the largest value: a few KiB in practice
MAX_VERSION = 2**53 - 1  # config_cas.lua reads the version as a double
NOT_TEXT = "is not UTF-8 text (it holds lone surrogates)"
_BY_NAME = {var.name: var for var in VARIABLES}
_PUBLIC = frozenset(var.name for var in VARIABLES if not var.secret)  # anything else is shown redacted


@dataclass(frozen=True)
class RuntimeConfig:
    """The overrides in force: their version (0: none ever set) and values, as environment strings."""

    version: int = 0
    values: Mapping[str, str] = field(default_factory=dict)

    def shown(self) -> dict[str, str]:
        """The values with secrets redacted, for printing."""
        return {name: value if name in _PUBLIC else REDACTED for name, value in self.values.items()}


@dataclass(frozen=True)
class Unreadable:
    """A stored configuration that ``ops config`` did not write: what is wrong, and its version if readable."""

    reason: str
    version: int | None = None

    def problem(self, key: str) -> str:
        """One line for an operator: what is wrong, what the processes do, how to repair it."""
        return (
            f"the run-time configuration in {key} cannot be read: {self.reason}. Running processes keep the"
            " configuration in force. Repair it: `python -m ops config set NAME=VALUE ...` replaces it, or"
            f" `redis-cli DEL '{key}'` goes back to the environment's settings."
        )


def parse(raw: str | bytes | None) -> RuntimeConfig | Unreadable:
    """The stored form (``None``: nothing set yet) as a :class:`RuntimeConfig`, or :class:`Unreadable`. Never raises."""
    if raw is None:
        return RuntimeConfig()
    if len(raw) > MAX_STORED_BYTES:
        return Unreadable(f"it holds {len(raw)} bytes, more than the {MAX_STORED_BYTES} a configuration may")
    try:  # UTF-8 only (json.loads would guess UTF-16 from bytes), and a str must encode (no lone surrogates)
        text = raw.decode() if isinstance(raw, bytes) else raw
        data = json.loads(text.encode().decode())
    except UnicodeError:
        return Unreadable("it is not UTF-8 text")
    except RecursionError:
        return Unreadable("it is not JSON (nested too deep)")
    except ValueError as e:
        return Unreadable(f"it is not JSON ({getattr(e, 'msg', 'a number is too long')})")
    if not isinstance(data, dict):
        return Unreadable(f'it is a JSON {_kind(data)}, not an object {{"version": n, "values": {{...}}}}')
    version = data.get("version")
    if type(version) is not int or not 0 <= version <= MAX_VERSION:
        return Unreadable(f"its version is not an integer 0..{MAX_VERSION}")
    values = data.get("values")
    if not isinstance(values, dict):
        return Unreadable('its "values" are not an object {"NAME": "value", ...}', version)
    decoded: dict[str, str] = {}
    for name, value in values.items():
        if name not in RUNTIME_VARIABLES:
            return Unreadable(f"it sets {_name(name)}, which is not a run-time variable", version)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return Unreadable(f"the value of {name} is a JSON {_kind(value)}, not a string", version)
        if not _encodable(str(value)):
            return Unreadable(f"the value of {name} {NOT_TEXT}", version)
        decoded[name] = str(value)
    return RuntimeConfig(version, decoded)


def apply(base: Settings, values: Mapping[str, str]) -> Settings:
    """``base`` with ``values`` applied; raises :class:`SettingsError` naming what is wrong."""
    changes: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in RUNTIME_VARIABLES:
            raise SettingsError(
                f"{_name(name)} cannot be changed at run time; these can: {', '.join(RUNTIME_VARIABLES)}"
            )
        var = _BY_NAME[name]
        if not _encodable(raw):
            raise SettingsError(f"the value of {name} {NOT_TEXT}")
        changes[var.attr] = parse_value(var, raw)
    settings = base.with_overrides(**changes)
    if "image_stages" in changes:
        from ..images import ImageConfig, check_config

        check_config(ImageConfig.from_settings(settings))
    return settings


class ConfigStore:
    """Reads and writes one queue's run-time configuration."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self.key = keys.config
        self._cas = client.register_script(source("config_cas"))

    def load(self) -> RuntimeConfig | Unreadable:
        """The configuration in force, or why the stored one cannot be read."""
        return self._look(self._client)[1]

    def change(self, base: Settings, set_values: Mapping[str, str], unset: tuple[str, ...] = ()) -> RuntimeConfig:
        """Validate and store a change; raises :class:`SettingsError` (nothing stored) if it is invalid.

        Unsetting a name that is not set is refused; an unreadable stored configuration is replaced.
        """
        if not set_values and not unset:
            raise SettingsError("nothing to change: give NAME=VALUE to set or NAME to unset")
        seen, current = self._look(self._client)
        if isinstance(current, Unreadable):
            if unset:
                raise SettingsError(f"nothing to unset: {current.problem(self.key)}")
            apply(base, set_values)
            version = (current.version or 0) + 1
            self._replace(seen, version, dict(set_values))
            return RuntimeConfig(version, dict(set_values))
        for name in unset:
            if name not in current.values:
                is_set = ", ".join(sorted(current.values)) or "nothing"
                why = "is not set at run time" if name in RUNTIME_VARIABLES else "is not a run-time variable"
                raise SettingsError(f"{_name(name)} {why} (set at run time: {is_set}); nothing changed")
        values = {k: v for k, v in {**current.values, **set_values}.items() if k not in unset}
        apply(base, values)
        version = int(self._cas(keys=[self.key], args=[current.version, json.dumps(values, sort_keys=True)]))
        if version < 0:
            raise SettingsError("the run-time configuration changed meanwhile; read it again and retry")
        return RuntimeConfig(version, values)

    def _look(self, client: Any) -> tuple[object, RuntimeConfig | Unreadable]:
        """What the key holds now (its value, or its type when it is no string) and that parsed."""
        try:
            raw = client.get(self.key)
        except redis.ResponseError as e:
            if "WRONGTYPE" not in str(e):
                raise
            kind = client.type(self.key)
            shown = kind.decode(errors="replace") if isinstance(kind, bytes) else str(kind)
            return ("type", kind), Unreadable(f"the key holds a Redis {shown}, not a string")
        return raw, parse(raw)

    def _replace(self, seen: object, version: int, values: dict[str, str]) -> None:
        """Overwrite an unreadable configuration, unless someone changed it since it was ``seen``."""
        stored = json.dumps({"version": version, "values": values}, sort_keys=True)
        pipe: Any = self._client.pipeline(transaction=True)
        try:
            pipe.watch(self.key)
            if self._look(pipe)[0] != seen:
                raise redis.WatchError
            pipe.multi()
            pipe.set(self.key, stored)
            pipe.execute()
        except redis.WatchError:
            raise SettingsError("the run-time configuration changed meanwhile; read it again and retry") from None
        finally:
            pipe.reset()


class RuntimeFollower:
    """What one process follows of a queue's run-time configuration: the version in force and its settings.

    Each new version applies on top of ``base`` (the environment's settings),
    never on top of the previous one. A stored configuration that cannot be
    read or does not apply (refused when stored, so only a hand-written key
    gets here) is logged once and skipped: the settings in force stay. When
    Redis does not answer, they stay too.
    """

    def __init__(self, base: Settings, keys: Keys) -> None:
        self.base = base
        self.version = 0  # of the configuration in force
        self._key = keys.config
        self._seen: object = None  # what the key held at the last look (None: nothing, the environment's settings)

    def follow(self, raw: str | bytes | None) -> Settings | None:
        """The settings of the stored ``raw`` when it changed since the last look and applies; otherwise ``None``."""
        if raw == self._seen:
            return None
        self._seen = raw
        config = parse(raw)
        if isinstance(config, Unreadable):
            log.error("%s (version %d stays in force)", config.problem(self._key), self.version)
            return None
        try:
            settings = apply(self.base, config.values)
        except WorkerError as e:
            log.error("run-time configuration version %d refused, keeping the current one: %s", config.version, e)
            return None
        self.version = config.version
        log.info("applied run-time configuration version %d: %s", config.version, config.shown())
        return settings

    def poll(self, client: redis.Redis) -> Settings | None:
        """Read the configuration (blocking client) and :meth:`follow` it."""
        try:
            raw = SyncDriver(client).run(_read(self._key))
        except (redis.RedisError, OSError, UnicodeError) as e:
            self._not_read(e)
            return None
        return self.follow(raw)

    async def poll_async(self, client: aioredis.Redis) -> Settings | None:
        """Read the configuration (asyncio client) and :meth:`follow` it."""
        try:
            raw = await AsyncDriver(client).run(_read(self._key))
        except (redis.RedisError, OSError, UnicodeError) as e:
            self._not_read(e)
            return None
        return self.follow(raw)

    async def changes(self, client: aioredis.Redis, every: float) -> AsyncIterator[Settings]:
        """Look every ``every`` seconds (asyncio client); yields the settings of each new version that applies."""
        while True:
            await asyncio.sleep(every)
            settings = await self.poll_async(client)
            if settings is not None:
                yield settings

    def _not_read(self, error: Exception) -> None:
        if not isinstance(error, redis.ResponseError | UnicodeError):  # Redis away: said at every look
            log.warning("run-time configuration not read (%s); keeping the current one", error)
            return
        # WRONGTYPE (a hash, a list...), or bytes a decoding client refuses: unreadable, logged once.
        if (mark := ("refused", str(error))) != self._seen:
            self._seen = mark
            problem = Unreadable(f"Redis refuses to read it ({printable(str(error))[:200]})").problem(self._key)
            log.error("%s (version %d stays in force)", problem, self.version)


def _kind(value: object) -> str:
    kinds: dict[type, str] = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _name(name: str) -> str:
    """A name as a message may show it: only if it looks like one (``NAME=VALUE`` mixed up may put a secret here)."""
    return name if re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", name) else "a name that is no variable name (not shown)"


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeError:
        return False
    return True


def _read(key: str) -> Operation[Any]:
    """Operation: the stored configuration (``None`` when unset)."""
    return (yield Command("get", (key,)))
