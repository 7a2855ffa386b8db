"""Dramatiq entry point: ``dramatiq worker.actors`` runs a complete worker.

Settings are read from the environment here, once, and passed down.
"""

from __future__ import annotations

import logging
import sys

from .metrics import use_multiprocess_dir

use_multiprocess_dir()  # before anything imports prometheus_client

from ..config.settings import Settings  # noqa: E402
from ..errors import SettingsError  # noqa: E402
from .broker import broker_problem, build_broker  # noqa: E402
from .images import declare as declare_images  # noqa: E402
from .leader import declare as declare_leader  # noqa: E402
from .logs import install as install_log_redaction  # noqa: E402
from .status_writer import declare as declare_status_writer  # noqa: E402

try:
    settings = Settings.from_env()
except SettingsError as error:
    sys.stderr.write(f"callback worker: configuration error: {error}\n")
    raise SystemExit(2) from error

if problem := broker_problem(settings):
    sys.stderr.write(f"callback worker: {problem}\n")
    raise SystemExit(2)

install_log_redaction()
logging.getLogger("worker").setLevel(logging.INFO)
broker, watch = build_broker(settings)
lead_callbacks = declare_leader(broker, settings, watch)
write_statuses = declare_status_writer(broker, settings, watch)
process_image_edit_task = declare_images(broker, settings)

__all__ = ["broker", "lead_callbacks", "process_image_edit_task", "settings", "write_statuses"]
