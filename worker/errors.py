"""The worker's exception tree.

Everything the worker raises on purpose derives from :class:`WorkerError`.
Bad input from a caller is also a :class:`ValueError`, so callers that only
know the standard library can still catch it.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of every error raised on purpose by the callback worker."""


class SettingsError(WorkerError, ValueError):
    """A configuration value is missing, unknown or malformed."""


class InvalidCallback(WorkerError, ValueError):
    """A callback handed to the producer cannot be enqueued.

    Nothing is enqueued when this is raised (for a batch: none of it).
    """


class InvalidCallbackURL(InvalidCallback):
    """The callback URL is not an absolute http(s) URL the worker may call."""


class InvalidPayload(InvalidCallback):
    """The payload cannot be serialised to JSON."""


class PayloadTooLarge(InvalidCallback):
    """The serialised payload exceeds ``CALLBACK_MAX_PAYLOAD_BYTES``."""


class BlockedAddress(WorkerError):
    """A callback target resolved to an address the SSRF guard forbids."""


class EnqueueFailed(WorkerError):
    """Redis did not accept the callbacks.

    With one shard nothing was enqueued. A batch spread over several shards is
    written shard by shard, each all or none: ``enqueued`` lists the ids of the
    shards written before the failure (already queued; do not enqueue them again).
    """

    def __init__(self, message: str, enqueued: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.enqueued = enqueued


class LeaseLost(WorkerError):
    """This process no longer holds the leader lease (fenced off)."""


class StreamGone(WorkerError):
    """The stream or its consumer group vanished under a command (``ops reset``): create it again."""
