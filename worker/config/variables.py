"""Every environment variable the worker reads: its name, the settings field, parser, and what it allows.

``VARIABLES`` is the table the README documents; :func:`reject_unknown` refuses a
``CALLBACK_*`` name it does not list (a typo, usually). Parsers raise
``ValueError`` with what is wrong; :func:`parse_value` (used for the environment
and for run-time changes alike) turns anything a parser raises into a
:class:`~worker.errors.SettingsError` naming the variable: one printable line
that never shows a secret (a ``secret`` variable's value, a URL's credentials).
"""

from __future__ import annotations

import base64
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import redact
from ..errors import SettingsError

SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the field it sets, its parser and what it allows."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    allowed: str
    secret: bool = False


MAX_SHOWN_CHARS = 120  # of a value quoted in an error message
MAX_DETAIL_CHARS = 300  # of what a parser says is wrong
REDACTED = "<redacted>"


def _number(kind: type, *, low: float, high: float | None = None, low_open: bool = False) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)  # its message quotes the value: parse_value clips it and removes URL credentials
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


def _scheme(raw: str) -> str:
    try:
        return urlsplit(raw).scheme
    except ValueError:  # urllib's message repeats the netloc, credentials included
        raise ValueError("cannot be parsed as a URL") from None


def _broker_url(raw: str) -> str:
    if _scheme(raw) not in ("amqp", "amqps", "redis", "rediss", "unix"):
        raise ValueError("scheme must be amqp:// or amqps:// (RabbitMQ), or redis://, rediss://, unix:// (Redis)")
    return raw


def _redis_url(raw: str) -> str:
    if _scheme(raw) not in ("redis", "rediss", "unix"):
        raise ValueError("scheme must be redis://, rediss:// or unix://")
    return raw


def _database_url(raw: str) -> str:
    scheme = _scheme(raw)
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


def secret_value(raw: str) -> str:
    signing_key(raw)
    return raw


def _secrets_by_prefix(raw: str) -> tuple[tuple[str, str], ...]:
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from e
    except RecursionError:
        raise ValueError("not JSON (nested too deep)") from None
    if not isinstance(mapping, dict):
        raise ValueError("must be a JSON object")
    pairs = []
    for prefix, secret in mapping.items():
        # Keys and values swapped would put a secret here: never echo one, nor a URL's credentials.
        shown = REDACTED if prefix.startswith(SECRET_PREFIX) else repr(_clip(without_credentials(prefix)))
        try:
            parts = urlsplit(prefix)
            parts.port  # noqa: B018 - parsing the port validates it
        except ValueError as e:
            raise ValueError(f"prefix {shown} cannot be parsed (malformed host or port)") from e
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"prefix {shown} must start with http:// or https:// (keys are URL prefixes)")
        if not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(
                f"prefix {shown} must be an origin and a path (https://host[:port][/path]), "
                "without credentials, query or fragment"
            )
        if not isinstance(secret, str):
            raise ValueError(f"secret for {shown} must be a string")
        try:
            signing_key(secret)
        except ValueError as e:
            raise ValueError(f"secret for {shown}: {e}") from e
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
    except ValueError:  # urllib's message repeats the netloc, credentials included
        raise ValueError("cannot be parsed (malformed host or port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return raw


def _model_url_prefixes(raw: str) -> tuple[str, ...]:
    return tuple(_model_url(part.strip()) for part in raw.split(","))


VARIABLES: tuple[Variable, ...] = (
    Variable("REDIS_URL", "redis_url", _redis_url, "a redis://, rediss:// or unix:// URL"),
    Variable("DRAMATIQ_BROKER_URL", "broker_url", _broker_url, "an amqp:// (RabbitMQ) or redis:// URL"),
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
    Variable("CALLBACK_SIGNING_SECRET", "signing_secret", secret_value, "whsec_ + base64 of >= 24 bytes", secret=True),
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


def parse_value(var: Variable, raw: str) -> Any:
    """``raw`` (stripped) parsed by ``var``; anything its parser raises becomes one :class:`SettingsError`.

    The message names the variable, shows the value as :func:`shown` and says
    what is wrong and what is allowed, on one printable line.
    """
    try:
        return var.parse(raw.strip())
    except (ValueError, TypeError, RecursionError) as e:
        detail = _clip(without_credentials(str(e)), MAX_DETAIL_CHARS)
        raise SettingsError(
            printable(f"{var.name}={shown(var, raw)!r} is invalid: {detail}. Allowed: {var.allowed}.")
        ) from e


def shown(var: Variable, raw: str) -> str:
    """``raw`` as it may appear in a message: secrets redacted, URLs without credentials, path or query, clipped."""
    if var.secret:
        return REDACTED
    could_hide_a_secret = any(mark in raw for mark in "@?#")
    if could_hide_a_secret and var.name.endswith("_URL"):
        return redact.url(raw)
    if could_hide_a_secret and "://" in raw:  # a list of URLs
        return _clip(",".join(redact.url(part.strip()) for part in raw.split(",")))
    return _clip(raw)


def printable(text: str) -> str:
    """``text`` on one printable line: control, formatting and surrogate characters escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def without_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced (a parser's message may quote a URL)."""
    return _USERINFO.sub(lambda found: f"{found.group(1)}{REDACTED}@", text)


# After "://": the authority up to its last "@" (urlsplit's userinfo), ending before "/", "?", "#" or a space.
_USERINFO = re.compile(r"(://)[^/?#\s]*@")


def _clip(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def reject_unknown(env: Mapping[str, str]) -> None:
    """Fail on a ``CALLBACK_*`` variable the worker does not know, suggesting the closest name."""
    for name in sorted(env):
        if name.startswith("CALLBACK_") and name not in _KNOWN:
            close = difflib.get_close_matches(name[:64], sorted(_KNOWN), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            shown_name = printable(_clip(name, 64))
            raise SettingsError(f"unknown setting {shown_name}.{hint} Known: {', '.join(sorted(_KNOWN))}.")
