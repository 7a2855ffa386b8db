"""The image pipeline's configuration, taken from :class:`~worker.config.settings.Settings` once.

Stages and helpers receive these small frozen objects instead of the whole
settings, so they are easy to build in tests and to swap on a config reload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..config.settings import Settings

MODEL_CONNECT_TIMEOUT = 5.0  # seconds; capped at IMAGE_MODEL_TIMEOUT


@dataclass(frozen=True)
class ImageLimits:
    """What an input (or a model's output) must satisfy before its pixels are decoded."""

    max_bytes: int = Settings.image_max_bytes
    max_pixels: int = Settings.image_max_pixels
    formats: tuple[str, ...] = Settings.image_formats


@dataclass(frozen=True)
class ModelConfig:
    """Where and how the ``model`` stage calls the model service."""

    url: str = field(default="", repr=False)
    url_prefixes: tuple[str, ...] = ()
    timeout: float = Settings.image_model_timeout
    retries: int = Settings.image_model_retries
    backoff: float = Settings.image_model_backoff

    @property
    def connect_timeout(self) -> float:
        """Seconds to connect: 5, or the whole timeout when that is shorter."""
        return min(MODEL_CONNECT_TIMEOUT, self.timeout)

    @property
    def schedule(self) -> tuple[float, ...]:
        """Waits before retry 1, 2, ...: ``backoff`` doubling each time."""
        return tuple(self.backoff * 2**n for n in range(max(1, self.retries)))

    def allows(self, url: str) -> bool:
        """Whether a task may send its image to ``url`` (its own ``model_url`` param).

        Allowed: URLs starting with one of ``IMAGE_MODEL_URL_PREFIXES``, or, when
        none are set, URLs on the same origin (scheme, host, port) as
        ``IMAGE_MODEL_URL``, so a task can pick another model on the same service
        but cannot point the worker at an arbitrary host.
        """
        origin = _origin(url)
        if self.url_prefixes:
            # The origin check stops "http://models.internal" from matching "http://models.internal.evil.example".
            return any(url.startswith(prefix) and origin == _origin(prefix) for prefix in self.url_prefixes)
        return bool(self.url) and origin == _origin(self.url)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


@dataclass(frozen=True)
class ImageConfig:
    """Everything the pipeline needs from the settings."""

    media_root: Path = Settings.media_root
    stages: tuple[str, ...] = Settings.image_stages
    short_side: int = Settings.image_short_side
    jpeg_quality: int = Settings.image_jpeg_quality
    limits: ImageLimits = ImageLimits()
    model: ModelConfig = ModelConfig()

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageConfig:
        """The image part of ``settings`` (call :func:`~worker.images.check_config` at start-up too)."""
        return cls(
            media_root=settings.media_root,
            stages=settings.image_stages,
            short_side=settings.image_short_side,
            jpeg_quality=settings.image_jpeg_quality,
            limits=ImageLimits(settings.image_max_bytes, settings.image_max_pixels, settings.image_formats),
            model=ModelConfig(
                url=settings.image_model_url,
                url_prefixes=settings.image_model_url_prefixes,
                timeout=settings.image_model_timeout,
                retries=settings.image_model_retries,
                backoff=settings.image_model_backoff,
            ),
        )
