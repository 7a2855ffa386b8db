"""One frozen settings object, read from the environment once at the entry point.

Every variable, its default and what it accepts is listed in ``VARIABLES`` and
documented in the README. An unknown ``CALLBACK_*`` variable (a typo, usually)
or a malformed value stops start-up with a :class:`SettingsError` that names
the variable, what was given and what is allowed.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from .parsers import SECRET_PREFIX, secret_value
from .variables import VARIABLES, parse_value, reject_unknown

VAR_DIR = Path("var")


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one worker deployment.

    Build it with :meth:`from_env` at an entry point and pass it down; nothing
    else in the package reads the environment.
    """

    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may carry a password
    broker_url: str = field(default="", repr=False)  # Dramatiq's broker; empty: REDIS_URL
    database_url: str = field(default=f"sqlite:///{VAR_DIR}/worker.db", repr=False)  # may carry a password
    namespace: str = "cbw"
    queue: str = "default"
    shards: int = 1
    batch_size: int = 100
    min_interval: float = 0.5
    max_delay: float = 1.0
    rate: float = 200.0
    host_concurrency: int = 8
    host_rate: float = 0.0  # a ceiling per host:port (0: the global rate is the only one)
    host_rates: tuple[tuple[str, float], ...] = ()  # ceilings of named hosts, over host_rate
    adaptive: bool = True  # learn each host's pace from its 429/503/timeouts (AIMD) and open circuits
    max_age: float = 86_400.0  # a callback held back by its host's circuit is dead-lettered past this age
    circuit_probe: float = 10.0  # seconds between probes of an open circuit
    after_commit: bool = True  # release an image task's callback only after its final row is committed
    timeout: float = 10.0
    connect_timeout: float = 3.0
    claim_idle: float = 30.0
    lease_ttl: float = 10.0
    retry_schedule: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
    max_attempts: int = 7
    max_deliveries: int = 5
    retry_after_max: float = 3600.0
    signing_secret: str = field(default="", repr=False)
    signing_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    ed25519_key: str = field(default="", repr=False)  # whsk_...: adds a v1a signature beside v1
    allow_private: bool = False
    immediate: bool = False
    max_payload_bytes: int = 1024 * 1024
    max_response_bytes: int = 64 * 1024
    metrics_port: int = 9191
    media_root: Path = VAR_DIR / "media"
    status_flush_interval: float = 0.1
    status_flush_size: int = 500
    image_stages: tuple[str, ...] = ("validate", "resize", "format")
    image_short_side: int = 350
    image_max_pixels: int = 50_000_000
    image_max_bytes: int = 20 * 1024 * 1024
    image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
    image_jpeg_quality: int = 90
    image_model_url: str = field(default="", repr=False)  # may carry a key (?code=...)
    image_model_url_prefixes: tuple[str, ...] = field(default=(), repr=False)  # URLs: may carry credentials
    image_model_timeout: float = 60.0
    image_model_retries: int = 2
    image_model_backoff: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, signs: bool = True) -> Settings:
        """Read, validate and return the settings from ``environ`` (default ``os.environ``).

        Without ``CALLBACK_SIGNING_SECRET``, a process that ``signs`` (a worker)
        uses the one kept in ``var/signing_secret``, creating it on first use;
        one that does not (a producer, an operator command) creates no file.
        """
        env = dict(os.environ if environ is None else environ)
        reject_unknown(env)
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = env.get(var.name)
            if raw is None or raw.strip() == "":
                continue
            values[var.attr] = parse_value(var, raw)
        if "rate" not in values:
            batch = values.get("batch_size", cls.batch_size)
            interval = values.get("min_interval", cls.min_interval)
            values["rate"] = batch / interval
        if "max_attempts" not in values and "retry_schedule" in values:
            values["max_attempts"] = len(values["retry_schedule"]) + 1
        timeout = values.get("timeout", cls.timeout)
        values.setdefault("connect_timeout", min(cls.connect_timeout, timeout))
        values.setdefault("claim_idle", max(cls.claim_idle, 2 * timeout + 5))
        if "signing_secret" not in values and signs:
            values["signing_secret"] = local_signing_secret(VAR_DIR / "signing_secret")
        settings = cls(**values)
        settings.check()
        return settings

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like :meth:`from_env`."""
        settings = replace(self, **changes)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules; raises :class:`SettingsError` naming the variables involved."""
        margin = 5.0
        if self.claim_idle < self.timeout + margin:
            raise SettingsError(
                f"CALLBACK_CLAIM_IDLE={self.claim_idle:g} must be at least CALLBACK_TIMEOUT "
                f"({self.timeout:g}) + {margin:g} s, or deliveries still in flight are claimed twice. "
                f"Set CALLBACK_CLAIM_IDLE={self.timeout + margin:g} or more."
            )
        batch_rate = self.batch_size / self.min_interval
        if self.rate > batch_rate * (1 + 1e-9):
            raise SettingsError(
                f"CALLBACK_RATE={self.rate:g}/s exceeds CALLBACK_BATCH_SIZE / CALLBACK_MIN_INTERVAL "
                f"= {self.batch_size} / {self.min_interval:g} s = {batch_rate:g}/s. Raise the batch size, "
                "lower the interval, or lower the rate."
            )
        if self.connect_timeout > self.timeout:
            raise SettingsError(
                f"CALLBACK_CONNECT_TIMEOUT={self.connect_timeout:g} must not exceed CALLBACK_TIMEOUT={self.timeout:g}."
            )

    @property
    def dramatiq_url(self) -> str:
        """The URL of Dramatiq's broker: ``DRAMATIQ_BROKER_URL``, else ``REDIS_URL``."""
        return self.broker_url or self.redis_url

    @property
    def uses_rabbitmq(self) -> bool:
        """Whether Dramatiq's broker is RabbitMQ (``amqp://``), not Redis."""
        return self.dramatiq_url.startswith(("amqp://", "amqps://"))

    @property
    def emission_interval(self) -> float:
        """Seconds between two delivery starts at the global rate."""
        return 1.0 / self.rate


def local_signing_secret(path: Path) -> str:
    """The signing secret kept in ``path``, created (mode 0600) on first use.

    It is the embedded default for a single machine; deployments with more than
    one host set ``CALLBACK_SIGNING_SECRET`` so every worker signs alike.
    """
    if path.exists():
        return secret_value(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return secret_value(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret
