"""Parsers of environment values: each takes the raw string and returns the value, or raises ``ValueError``.

Their messages say what is wrong without repeating the value (it may be a secret);
:mod:`.variables` names the variable and what is allowed.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .. import redact

SECRET_PREFIX = "whsec_"
ED25519_PREFIX = "whsk_"  # Standard Webhooks' asymmetric secret key; the public key is "whpk_"


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
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64 of at least 24 bytes)."""
    key = _prefixed_base64(secret, SECRET_PREFIX)
    if len(key) < 24:
        raise ValueError("key is shorter than 24 bytes")
    return key


def ed25519_seed(secret: str) -> bytes:
    """The Ed25519 private key (32-byte seed) of a Standard Webhooks ``whsk_`` secret key (base64 of 32 or 64 bytes)."""
    key = _prefixed_base64(secret, ED25519_PREFIX, "generate one: python -m ops keys generate")
    if len(key) not in (32, 64):  # the seed, or seed + public key as some tools write it
        raise ValueError("an Ed25519 secret key is 32 bytes (or 64: seed and public key)")
    return key[:32]


def _prefixed_base64(secret: str, prefix: str, hint: str = "") -> bytes:
    if not secret.startswith(prefix):
        raise ValueError(f"must start with {prefix!r}" + (f" ({hint})" if hint else ""))
    try:
        return base64.b64decode(secret[len(prefix) :], validate=True)
    except ValueError as e:
        raise ValueError(f"the part after {prefix!r} is not valid base64") from e


def ed25519_secret(raw: str) -> str:
    ed25519_seed(raw)
    return raw


def secret_value(raw: str) -> str:
    signing_key(raw)
    return raw


def _json_object(raw: str, shape: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; ``ValueError`` saying what it is not (``shape``: what it should be)."""
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from e
    except RecursionError:
        raise ValueError("not JSON (nested too deep)") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"must be a JSON object {shape}".rstrip())
    return mapping


def _secrets_by_prefix(raw: str) -> tuple[tuple[str, str], ...]:
    mapping = _json_object(raw, "")
    pairs = []
    for prefix, secret in mapping.items():
        # Keys and values swapped would put a secret here: never echo one, nor a URL's credentials.
        shown = (
            redact.HIDDEN
            if prefix.startswith(SECRET_PREFIX)
            else repr(redact.clip(redact.without_credentials(prefix), 120))
        )
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


MAX_HOST_RATES = 10_000  # hosts in CALLBACK_HOST_RATES


def _host_rates(raw: str) -> tuple[tuple[str, float], ...]:
    """``{"host:port": rate}``: per-host ceilings (deliveries per second > 0), hosts lower-cased."""
    mapping = _json_object(raw, '{"host:port": rate}')
    if len(mapping) > MAX_HOST_RATES:
        raise ValueError(f"names {len(mapping)} hosts; at most {MAX_HOST_RATES}")
    rates = {}
    for target, rate in mapping.items():
        host, _, port = target.rpartition(":")
        shown = repr(redact.clip(target, 80))
        if not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or not host.isprintable():
            raise ValueError(f'{shown} is not host:port (e.g. "api.example.com:443")')
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not (0 < rate <= 1e6):
            raise ValueError(f"the rate for {shown} must be a number of deliveries per second in (0, 1000000]")
        rates[f"{host.lower()}:{int(port)}"] = float(rate)
    return tuple(sorted(rates.items()))


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
