"""Keeps message arguments out of the log: Dramatiq logs whole messages, which carry secrets.

When an actor raises, Dramatiq logs ``str(message)``: every argument of the
message, so an image task's base64 image (a megabyte on one line) and its
``callback_url`` with ``?token=...``. Every log record created in a worker
process has each Dramatiq message among its arguments replaced by a summary:
the actor and the message id, which is all an operator needs to find it.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

_installed = False


def summary(message: dramatiq.Message[Any] | MessageProxy) -> str:
    """``actor(message id)``: a message named without its arguments."""
    return f"{message.actor_name}({message.message_id})"


def _redacted(value: Any) -> Any:
    return summary(value) if isinstance(value, dramatiq.Message | MessageProxy) else value


def install() -> None:
    """Make every later log record of this process name Dramatiq messages by :func:`summary` only."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redacted(arg) for key, arg in record.args.items()}
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True
