"""What of a secret-bearing value may appear in a log line, an error message or ``ops`` output.

URLs carry credentials (``user:password@``), tokens in paths and query strings
(``?token=...``): anywhere outside the request itself a URL is shown as
``scheme://host:port/…``. Message bodies and signing keys are never shown.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


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
