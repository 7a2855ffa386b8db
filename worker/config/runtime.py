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
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from ..errors import SettingsError, WorkerError
from ..streams.keys import Keys
from ..streams.scripts import source
from .settings import Settings
from .variables import VARIABLES

log = logging.getLogger(__name__)

RUNTIME_VARIABLES = (
    "CALLBACK_RATE",
    "CALLBACK_BATCH_SIZE",
    "CALLBACK_MIN_INTERVAL",
    "CALLBACK_HOST_CONCURRENCY",
    "CALLBACK_SIGNING_SECRET",
    "CALLBACK_SIGNING_SECRETS",
    "CALLBACK_IMMEDIATE",
    "IMAGE_STAGES",
)
_BY_NAME = {var.name: var for var in VARIABLES}


@dataclass(frozen=True)
class RuntimeConfig:
    """The overrides in force: their version (0: none ever set) and values, as environment strings."""

    version: int = 0
    values: Mapping[str, str] = field(default_factory=dict)

    def shown(self) -> dict[str, str]:
        """The values with secrets redacted, for printing."""
        return {name: "<redacted>" if _BY_NAME[name].secret else value for name, value in self.values.items()}


def parse(raw: str | bytes | None) -> RuntimeConfig:
    """The stored form (or ``None``: nothing set yet) as a :class:`RuntimeConfig`."""
    if raw is None:
        return RuntimeConfig()
    data = json.loads(raw)
    return RuntimeConfig(int(data["version"]), {str(k): str(v) for k, v in data["values"].items()})


def apply(base: Settings, values: Mapping[str, str]) -> Settings:
    """``base`` with ``values`` applied; raises :class:`SettingsError` naming what is wrong."""
    changes: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in RUNTIME_VARIABLES:
            raise SettingsError(f"{name} cannot be changed at run time; these can: {', '.join(RUNTIME_VARIABLES)}")
        var = _BY_NAME[name]
        try:
            changes[var.attr] = var.parse(str(raw).strip())
        except (ValueError, TypeError) as e:
            shown = "<redacted>" if var.secret else raw
            raise SettingsError(f"{name}={shown!r} is invalid: {e}. Allowed: {var.allowed}.") from e
    settings = base.with_overrides(**changes)
    if "image_stages" in changes:
        from ..images import ImageConfig, check_config

        check_config(ImageConfig.from_settings(settings))
    return settings


class ConfigStore:
    """Reads and writes one queue's run-time configuration."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._key = keys.config
        self._cas = client.register_script(source("config_cas"))

    def load(self) -> RuntimeConfig:
        """The configuration in force."""
        return parse(self._client.get(self._key))

    def change(self, base: Settings, set_values: Mapping[str, str], unset: tuple[str, ...] = ()) -> RuntimeConfig:
        """Validate and store a change; raises :class:`SettingsError` (nothing stored) if it is invalid."""
        current = self.load()
        values = {k: v for k, v in {**current.values, **set_values}.items() if k not in unset}
        apply(base, values)
        version = int(self._cas(keys=[self._key], args=[current.version, json.dumps(values, sort_keys=True)]))
        if version < 0:
            raise SettingsError("the run-time configuration changed meanwhile; read it again and retry")
        return RuntimeConfig(version, values)


class RuntimeFollower:
    """What one process follows of a queue's run-time configuration: the version in force and its settings.

    Each new version applies on top of ``base`` (the environment's settings),
    never on top of the previous one. A version that does not apply (refused
    when stored, so only a hand-written key gets here) is logged and skipped:
    the settings in force stay. When Redis does not answer, they stay too.
    """

    def __init__(self, base: Settings, keys: Keys) -> None:
        self.base = base
        self.version = 0
        self._key = keys.config

    def follow(self, config: RuntimeConfig) -> Settings | None:
        """The settings of ``config`` when it is a version not seen yet and applies; otherwise ``None``."""
        if config.version == self.version:
            return None
        self.version = config.version
        try:
            settings = apply(self.base, config.values)
        except WorkerError as e:
            log.error("run-time configuration version %d refused, keeping the current one: %s", config.version, e)
            return None
        log.info("applied run-time configuration version %d: %s", config.version, config.shown())
        return settings

    def poll(self, client: redis.Redis) -> Settings | None:
        """Read the configuration (blocking client) and :meth:`follow` it."""
        try:
            raw = client.get(self._key)
        except (redis.RedisError, OSError) as e:
            _unread(e)
            return None
        return self.follow(parse(raw))

    async def poll_async(self, client: aioredis.Redis) -> Settings | None:
        """Read the configuration (asyncio client) and :meth:`follow` it."""
        try:
            raw = await client.get(self._key)
        except (redis.RedisError, OSError) as e:
            _unread(e)
            return None
        return self.follow(parse(raw))

    async def changes(self, client: aioredis.Redis, every: float) -> AsyncIterator[Settings]:
        """Look every ``every`` seconds (asyncio client); yields the settings of each new version that applies."""
        while True:
            await asyncio.sleep(every)
            settings = await self.poll_async(client)
            if settings is not None:
                yield settings


def _unread(error: Exception) -> None:
    log.warning("run-time configuration not read (%s); keeping the current one", error)
