"""Errors of the image pipeline: one class per kind of fault, a stable machine ``code`` on each.

:class:`InvalidImage` is bad input (the image, its path, the task's stage list
or params): retrying the same task cannot succeed. :class:`StageFailed` is a
stage or the pipeline failing on valid input (a model service down, a full
disk).

``str(error)`` says what was wrong and how to fix it; ``error.stage`` names the
stage or step (``decode``, ``save``) that failed; :meth:`ImageError.as_payload`
is the ``error`` object of the failure callback.
"""

from __future__ import annotations

from ..errors import WorkerError

# Stable codes: callbacks, the database and dashboards key on them; add, never rename.
INVALID_CODES = frozenset(
    {
        "too_large",  # input bytes (or a media file) exceed IMAGE_MAX_BYTES
        "invalid_base64",  # the task's image is not base64
        "unsupported_format",  # a real image format that IMAGE_FORMATS does not allow
        "corrupt",  # not a recognisable image, or its data does not decode
        "truncated",  # the data ends early
        "too_many_pixels",  # width x height exceeds IMAGE_MAX_PIXELS
        "decompression_bomb",  # so large that Pillow's own guard refused to open it
        "animated",  # more than one frame
        "path_outside_media_root",  # absolute, '..' or a symlink leading out of MEDIA_ROOT
        "not_found",  # no regular file at that path under MEDIA_ROOT
        "unknown_stage",  # a stage name nobody registered
        "invalid_params",  # a per-task param of the wrong type, range or target
    }
)
FAILURE_CODES = frozenset(
    {
        "stage_failed",  # a stage raised something unexpected or returned no image
        "model_not_configured",  # the model stage has no URL (IMAGE_MODEL_URL or a task's model_url)
        "model_failed",  # the model service answered an error (or no connection) on every attempt
        "model_timeout",  # the last model attempt timed out
        "model_bad_response",  # the model answered 2xx with something that is not an acceptable image
        "encode_failed",  # the result could not be encoded
        "save_failed",  # the result could not be written under MEDIA_ROOT
    }
)


class ImageError(WorkerError):
    """Root of the image pipeline's errors: a ``code``, the ``stage`` and partial ``timings``."""

    codes: frozenset[str] = INVALID_CODES | FAILURE_CODES

    def __init__(self, code: str, message: str, *, stage: str | None = None) -> None:
        if code not in self.codes:
            raise ValueError(f"{type(self).__name__} has no code {code!r}; known: {', '.join(sorted(self.codes))}")
        super().__init__(message)
        self.code = code
        self.stage = stage
        self.timings: dict[str, float] = {}  # filled by the pipeline: steps finished before (and with) the failure

    @property
    def message(self) -> str:
        """The human-readable explanation."""
        return str(self.args[0])

    def as_payload(self) -> dict[str, str | None]:
        """The ``error`` object of a failure callback: ``{code, message, stage}``."""
        return {"code": self.code, "message": self.message, "stage": self.stage}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, stage={self.stage!r}, message={self.message!r})"


class InvalidImage(ImageError, ValueError):
    """The input cannot be processed as given: the image, its path, the stage list or params."""

    codes = INVALID_CODES


class StageFailed(ImageError):
    """A stage or pipeline step failed on acceptable input."""

    codes = FAILURE_CODES
