"""What of a secret-bearing value may appear in a log line, an error message or ``ops`` output.

URLs carry credentials (``user:password@``), tokens in paths and query strings
(``?token=...``): anywhere outside the request itself a URL is shown as
``scheme://host:port/…``. Message bodies and signing keys are never shown.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

HIDDEN = "<redacted>"


def url(value: Any) -> str:
    """``scheme://host:port/…``: no credentials, path, query or fragment (``/…`` marks that there was more)."""
    try:
        parts = urlsplit(str(value))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if not parts.scheme:
        return "<not a url>"
    host = f"[{host}]" if ":" in host else host
    origin = f"{parts.scheme}://{host}{f':{port}' if port else ''}"
    return origin + ("/…" if parts.path.strip("/") or parts.query or parts.fragment else "")


def printable(text: str) -> str:
    """``text`` on one printable line: control, formatting and surrogate characters escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def without_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced (a parser's message may quote a URL)."""
    return _USERINFO.sub(lambda found: f"{found.group(1)}{HIDDEN}@", text)


# After "://": the authority up to its last "@" (urlsplit's userinfo), ending before "/", "?", "#" or a space.
_USERINFO = re.compile(r"(://)[^/?#\s]*@")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[:limit] + "…"
