"""Dramatiq entry point: ``dramatiq worker.actors`` runs a complete worker.

Settings are read from the environment here, once, and passed down.
"""

from __future__ import annotations

import logging
import sys

from ..errors import SettingsError
from ..settings import Settings
from .broker import build_broker
from .leader import declare as declare_leader
from .watch import LeaderWatch

try:
    settings = Settings.from_env()
except SettingsError as error:
    sys.stderr.write(f"callback worker: configuration error: {error}\n")
    raise SystemExit(2) from error

logging.getLogger("worker").setLevel(logging.INFO)
broker = build_broker(settings)
_watch = next(m for m in broker.middleware if isinstance(m, LeaderWatch))
lead_callbacks = declare_leader(broker, settings, _watch)

__all__ = ["broker", "lead_callbacks", "settings"]
