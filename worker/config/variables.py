"""Every environment variable the worker reads: its name, the settings field, parser, and what it allows.

``VARIABLES`` is the table the README documents; :func:`reject_unknown` refuses a
``CALLBACK_*`` name it does not list (a typo, usually). Parsers raise
``ValueError`` with what is wrong; :func:`parse_value` (used for the environment
and for run-time changes alike) turns anything a parser raises into a
:class:`~worker.errors.SettingsError` naming the variable: one printable line
that never shows a secret (a ``secret`` variable's value, a URL's credentials).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import redact
from ..errors import SettingsError
from ..streams.shards import MAX_SHARDS
from .parsers import (
    PILLOW_MAX_PIXELS,
    _bool,
    _broker_url,
    _database_url,
    _host_rates,
    _image_formats,
    _model_url,
    _model_url_prefixes,
    _namespace,
    _number,
    _port,
    _redis_url,
    _schedule,
    _secrets_by_prefix,
    _stage_names,
    ed25519_secret,
    secret_value,
)


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
REDACTED = redact.HIDDEN


VARIABLES: tuple[Variable, ...] = (
    Variable("REDIS_URL", "redis_url", _redis_url, "a redis://, rediss:// or unix:// URL"),
    Variable("DRAMATIQ_BROKER_URL", "broker_url", _broker_url, "an amqp:// (RabbitMQ) or redis:// URL"),
    Variable("DATABASE_URL", "database_url", _database_url, "sqlite:///path or postgresql+psycopg2://..."),
    Variable("WORKER_NAMESPACE", "namespace", _namespace, "letters, digits, '_', '.', '-'"),
    Variable("CALLBACK_QUEUE", "queue", _namespace, "letters, digits, '_', '.', '-'"),
    Variable(
        "CALLBACK_SHARDS", "shards", _number(int, low=1, high=MAX_SHARDS), "an integer 1..256 (queues per namespace)"
    ),
    Variable("CALLBACK_BATCH_SIZE", "batch_size", _number(int, low=1, high=10_000), "an integer 1..10000"),
    Variable("CALLBACK_MIN_INTERVAL", "min_interval", _number(float, low=0, low_open=True), "seconds > 0"),
    Variable("CALLBACK_MAX_DELAY", "max_delay", _number(float, low=0.01, high=60), "seconds 0.01..60"),
    Variable("CALLBACK_RATE", "rate", _number(float, low=0, low_open=True), "deliveries per second > 0"),
    Variable("CALLBACK_HOST_CONCURRENCY", "host_concurrency", _number(int, low=1, high=10_000), "an integer >= 1"),
    Variable("CALLBACK_HOST_RATE", "host_rate", _number(float, low=0), "deliveries per second >= 0 (0: no ceiling)"),
    Variable("CALLBACK_HOST_RATES", "host_rates", _host_rates, 'a JSON object {"host:port": deliveries per second}'),
    Variable("CALLBACK_ADAPTIVE", "adaptive", _bool, "1/0, true/false, yes/no, on/off"),
    Variable("CALLBACK_MAX_AGE", "max_age", _number(float, low=60), "seconds >= 60"),
    Variable("CALLBACK_CIRCUIT_PROBE", "circuit_probe", _number(float, low=0.1, high=3600), "seconds 0.1..3600"),
    Variable("CALLBACK_AFTER_COMMIT", "after_commit", _bool, "1/0, true/false, yes/no, on/off"),
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
        "CALLBACK_SIGNING_KEY",
        "ed25519_key",
        ed25519_secret,
        "whsk_ + base64 of an Ed25519 secret key (python -m ops keys generate)",
        secret=True,
    ),
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
        detail = redact.clip(redact.without_credentials(str(e)), MAX_DETAIL_CHARS)
        raise SettingsError(
            redact.printable(f"{var.name}={shown(var, raw)!r} is invalid: {detail}. Allowed: {var.allowed}.")
        ) from e


def shown(var: Variable, raw: str) -> str:
    """``raw`` as it may appear in a message: secrets redacted, URLs without credentials, path or query, clipped."""
    if var.secret:
        return REDACTED
    could_hide_a_secret = any(mark in raw for mark in "@?#")
    if could_hide_a_secret and var.name.endswith("_URL"):
        return redact.url(raw)
    if could_hide_a_secret and "://" in raw:  # a list of URLs
        return redact.clip(",".join(redact.url(part.strip()) for part in raw.split(",")), MAX_SHOWN_CHARS)
    return redact.clip(raw, MAX_SHOWN_CHARS)


def reject_unknown(env: Mapping[str, str]) -> None:
    """Fail on a ``CALLBACK_*`` variable the worker does not know, suggesting the closest name."""
    for name in sorted(env):
        if name.startswith("CALLBACK_") and name not in _KNOWN:
            close = difflib.get_close_matches(name[:64], sorted(_KNOWN), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            shown_name = redact.printable(redact.clip(name, 64))
            raise SettingsError(f"unknown setting {shown_name}.{hint} Known: {', '.join(sorted(_KNOWN))}.")
