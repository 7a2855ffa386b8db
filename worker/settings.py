"""One frozen settings object, read from the environment once at the entry point.

Every variable, its default and what it accepts is listed in ``VARIABLES`` and
documented in the README. An unknown ``CALLBACK_*`` variable (a typo, usually)
or a malformed value stops start-up with a :class:`SettingsError` that names
the variable, what was given and what is allowed.
"""

from __future__ import annotations

import base64
import difflib
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import SettingsError

VAR_DIR = Path("var")
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one worker deployment.

    Build it with :meth:`from_env` at an entry point and pass it down; nothing
    else in the package reads the environment.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = f"sqlite:///{VAR_DIR}/worker.db"
    namespace: str = "cbw"
    queue: str = "default"
    batch_size: int = 100
    min_interval: float = 0.5
    max_delay: float = 1.0
    rate: float = 200.0
    host_concurrency: int = 8
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
    image_model_url_prefixes: tuple[str, ...] = ()
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
            try:
                values[var.attr] = var.parse(raw.strip())
            except (ValueError, TypeError) as e:
                raise SettingsError(f"{var.name}={_shown(var, raw)!r} is invalid: {e}. Allowed: {var.allowed}.") from e
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
    def emission_interval(self) -> float:
        """Seconds between two delivery starts at the global rate."""
        return 1.0 / self.rate


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the field it sets, its parser and what it allows."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    allowed: str
    secret: bool = False


def _number(kind: type, *, low: float, high: float | None = None, low_open: bool = False) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        if (value <= low) if low_open else (value < low):
            raise ValueError(f"must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            raise ValueError(f"must be <= {high:g}")
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


def _redis_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("scheme must be redis://, rediss:// or unix://")
    return raw


def _database_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
        raise ValueError("only sqlite:/// and postgresql+psycopg2:// URLs are supported")
    return raw


def _namespace(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", raw):
        raise ValueError("use 1-64 letters, digits, '_', '.' or '-' (no ':' or braces: they shape Redis keys)")
    return raw


def _schedule(raw: str) -> tuple[float, ...]:
    parse = _number(float, low=0.0)
    delays = tuple(parse(part.strip()) for part in raw.split(","))
    if not delays:
        raise ValueError("empty")
    return delays


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as e:
        raise ValueError("the part after 'whsec_' is not valid base64") from e
    if len(key) < 24:
        raise ValueError("key is shorter than 24 bytes")
    return key


def _secret(raw: str) -> str:
    signing_key(raw)
    return raw


def _secrets_by_prefix(raw: str) -> tuple[tuple[str, str], ...]:
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from e
    if not isinstance(mapping, dict):
        raise ValueError("must be a JSON object")
    pairs = []
    for prefix, secret in mapping.items():
        if urlsplit(prefix).scheme not in ("http", "https"):
            # Keys and values swapped would put a secret here: never echo one.
            shown = "<redacted>" if prefix.startswith(SECRET_PREFIX) else repr(prefix)
            raise ValueError(f"prefix {shown} must start with http:// or https:// (keys are URL prefixes)")
        if not isinstance(secret, str):
            raise ValueError(f"secret for {prefix!r} must be a string")
        try:
            signing_key(secret)
        except ValueError as e:
            raise ValueError(f"secret for {prefix!r}: {e}") from e
        pairs.append((prefix, secret))
    return tuple(sorted(pairs, key=lambda pair: -len(pair[0])))


def _port(raw: str) -> int:
    return int(_number(int, low=0, high=65535)(raw))


# Stage names double as timing keys and error ``stage`` values; "decode" and "save" are the
# pipeline's own steps around the stages.
STAGE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
RESERVED_STAGE_NAMES = frozenset({"decode", "save"})
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS, which the worker never changes):
# keeping IMAGE_MAX_PIXELS at or below it makes the worker's explicit limit the one that applies.
PILLOW_MAX_PIXELS = 89_478_485


def _stage_names(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list of stage names (syntax only; the pipeline knows which exist)."""
    names = tuple(part.strip() for part in raw.split(","))
    for name in names:
        if not STAGE_NAME.fullmatch(name):
            raise ValueError(
                f"stage name {name!r} must be 1-32 lowercase letters, digits or '_', starting with a letter"
            )
        if name in RESERVED_STAGE_NAMES:
            raise ValueError(f"{name!r} is a pipeline step, not a stage")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"stage {duplicates[0]!r} is listed twice")
    return names


def _image_formats(raw: str) -> tuple[str, ...]:
    formats = []
    for part in raw.split(","):
        name = part.strip().upper()
        name = "JPEG" if name == "JPG" else name
        if name not in IMAGE_FORMATS:
            raise ValueError(f"unknown format {part.strip()!r}")
        if name not in formats:
            formats.append(name)
    return tuple(formats)


def _model_url(raw: str) -> str:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as e:
        raise ValueError(f"cannot be parsed ({e})") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return raw


def _model_url_prefixes(raw: str) -> tuple[str, ...]:
    return tuple(_model_url(part.strip()) for part in raw.split(","))


VARIABLES: tuple[Variable, ...] = (
    Variable("REDIS_URL", "redis_url", _redis_url, "a redis://, rediss:// or unix:// URL"),
    Variable("DATABASE_URL", "database_url", _database_url, "sqlite:///path or postgresql+psycopg2://..."),
    Variable("WORKER_NAMESPACE", "namespace", _namespace, "letters, digits, '_', '.', '-'"),
    Variable("CALLBACK_QUEUE", "queue", _namespace, "letters, digits, '_', '.', '-'"),
    Variable("CALLBACK_BATCH_SIZE", "batch_size", _number(int, low=1, high=10_000), "an integer 1..10000"),
    Variable("CALLBACK_MIN_INTERVAL", "min_interval", _number(float, low=0, low_open=True), "seconds > 0"),
    Variable("CALLBACK_MAX_DELAY", "max_delay", _number(float, low=0.01, high=60), "seconds 0.01..60"),
    Variable("CALLBACK_RATE", "rate", _number(float, low=0, low_open=True), "deliveries per second > 0"),
    Variable("CALLBACK_HOST_CONCURRENCY", "host_concurrency", _number(int, low=1, high=10_000), "an integer >= 1"),
    Variable("CALLBACK_TIMEOUT", "timeout", _number(float, low=0, low_open=True, high=300), "seconds (0, 300]"),
    Variable(
        "CALLBACK_CONNECT_TIMEOUT", "connect_timeout", _number(float, low=0, low_open=True, high=300), "seconds > 0"
    ),
    Variable("CALLBACK_CLAIM_IDLE", "claim_idle", _number(float, low=1), "seconds > CALLBACK_TIMEOUT + 5"),
    Variable("CALLBACK_LEASE_TTL", "lease_ttl", _number(float, low=1, high=600), "seconds 1..600"),
    Variable("CALLBACK_RETRY_SCHEDULE", "retry_schedule", _schedule, "comma-separated seconds, e.g. 5,30,120"),
    Variable("CALLBACK_MAX_ATTEMPTS", "max_attempts", _number(int, low=1, high=100), "an integer 1..100"),
    Variable("CALLBACK_MAX_DELIVERIES", "max_deliveries", _number(int, low=2, high=1000), "an integer >= 2"),
    Variable("CALLBACK_RETRY_AFTER_MAX", "retry_after_max", _number(float, low=0), "seconds >= 0"),
    Variable("CALLBACK_SIGNING_SECRET", "signing_secret", _secret, "whsec_ + base64 of >= 24 bytes", secret=True),
    Variable(
        "CALLBACK_SIGNING_SECRETS",
        "signing_secrets",
        _secrets_by_prefix,
        'a JSON object {"https://host/prefix": "whsec_..."}',
        secret=True,
    ),
    Variable("CALLBACK_ALLOW_PRIVATE", "allow_private", _bool, "1/0, true/false, yes/no, on/off"),
    Variable("CALLBACK_IMMEDIATE", "immediate", _bool, "1/0, true/false, yes/no, on/off"),
    Variable(
        "CALLBACK_MAX_PAYLOAD_BYTES", "max_payload_bytes", _number(int, low=1, high=64 * 1024 * 1024), "bytes <= 64 MiB"
    ),
    Variable("CALLBACK_MAX_RESPONSE_BYTES", "max_response_bytes", _number(int, low=0, high=16 * 1024 * 1024), "bytes"),
    Variable("METRICS_PORT", "metrics_port", _port, "a TCP port 0..65535 (0 disables the endpoint)"),
    Variable("MEDIA_ROOT", "media_root", Path, "a directory path"),
    Variable(
        "CALLBACK_STATUS_FLUSH_INTERVAL",
        "status_flush_interval",
        _number(float, low=0.001, high=60),
        "seconds 0.001..60 (the status writer flushes at least this often)",
    ),
    Variable(
        "CALLBACK_STATUS_FLUSH_SIZE",
        "status_flush_size",
        _number(int, low=1, high=100_000),
        "an integer 1..100000 (updates per status writer flush)",
    ),
    Variable("IMAGE_STAGES", "image_stages", _stage_names, "comma-separated stage names, e.g. validate,resize,format"),
    Variable(
        "IMAGE_SHORT_SIDE", "image_short_side", _number(int, low=16, high=8192), "pixels 16..8192 (never upscaled)"
    ),
    Variable(
        "IMAGE_MAX_PIXELS",
        "image_max_pixels",
        _number(int, low=1, high=PILLOW_MAX_PIXELS),
        f"an integer 1..{PILLOW_MAX_PIXELS} (width x height)",
    ),
    Variable("IMAGE_MAX_BYTES", "image_max_bytes", _number(int, low=1, high=256 * 1024 * 1024), "bytes <= 256 MiB"),
    Variable("IMAGE_FORMATS", "image_formats", _image_formats, "comma-separated: JPEG, PNG, WEBP, GIF"),
    Variable("IMAGE_JPEG_QUALITY", "image_jpeg_quality", _number(int, low=1, high=95), "an integer 1..95"),
    Variable("IMAGE_MODEL_URL", "image_model_url", _model_url, "an http:// or https:// URL", secret=True),
    Variable(
        "IMAGE_MODEL_URL_PREFIXES",
        "image_model_url_prefixes",
        _model_url_prefixes,
        "comma-separated http(s) URL prefixes a task's model_url may start with",
    ),
    Variable(
        "IMAGE_MODEL_TIMEOUT", "image_model_timeout", _number(float, low=0, low_open=True, high=600), "seconds (0, 600]"
    ),
    Variable("IMAGE_MODEL_RETRIES", "image_model_retries", _number(int, low=0, high=10), "an integer 0..10"),
    Variable("IMAGE_MODEL_BACKOFF", "image_model_backoff", _number(float, low=0, high=60), "seconds 0..60"),
)

_KNOWN = {var.name for var in VARIABLES}


def _shown(var: Variable, raw: str) -> str:
    return "<redacted>" if var.secret else raw


def reject_unknown(env: Mapping[str, str]) -> None:
    """Fail on a ``CALLBACK_*`` variable the worker does not know, suggesting the closest name."""
    for name in sorted(env):
        if name.startswith("CALLBACK_") and name not in _KNOWN:
            close = difflib.get_close_matches(name, sorted(_KNOWN), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise SettingsError(f"unknown setting {name}.{hint} Known: {', '.join(sorted(_KNOWN))}.")


def local_signing_secret(path: Path) -> str:
    """The signing secret kept in ``path``, created (mode 0600) on first use.

    It is the embedded default for a single machine; deployments with more than
    one host set ``CALLBACK_SIGNING_SECRET`` so every worker signs alike.
    """
    if path.exists():
        return _secret(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return _secret(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret
