"""The ``model`` stage: POST the image to a model service and continue with the image it answers.

This is how platforms call their pet-detection, generation and background-removal
services. The protocol:

* ``POST <url>``, body = the current image: PNG when it has alpha or came as PNG,
  else JPEG at quality 95; headers ``content-type: image/png|image/jpeg``,
  ``accept: image/*``, ``x-task-id``.
* A 2xx answer's body is the new image, validated exactly like an input (formats,
  ``IMAGE_MAX_BYTES`` while reading, pixels, animation). Its format becomes the
  current format, so a JPEG sent to a background remover that answers a PNG with
  alpha is saved as a PNG with alpha.
* 408, 429, 5xx, timeouts and connection errors are retried up to
  ``IMAGE_MODEL_RETRIES`` times, waiting ``IMAGE_MODEL_BACKOFF`` seconds doubling
  each time (+ up to 20 % jitter). Other statuses fail at once; redirects are
  never followed. Each attempt has ``IMAGE_MODEL_TIMEOUT`` seconds in total, 5 of
  them at most to connect; the worst case is ``(retries + 1) x timeout`` plus the
  waits, which must stay below the actor's time limit.

The URL is ``IMAGE_MODEL_URL``, or the task's ``model_url`` param when
:meth:`~worker.images.config.ModelConfig.allows` it. Model URLs are operator
configuration, so private addresses are allowed; only http(s) is.

The pipeline is synchronous (it runs in a Dramatiq worker thread); each call runs
its own event loop with :func:`asyncio.run` in the calling thread, with one
aiohttp session for its attempts. There is no connection reuse across tasks: one
handshake per task, small next to a model's inference time. From a thread that
already runs an event loop, call the pipeline through :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

from ..delivery.policy import Verdict, classify, compute_backoff
from ..delivery.targets import describe
from .config import ImageConfig, ModelConfig
from .convert import MEDIA_TYPES, has_alpha
from .decode import decode_image
from .errors import InvalidImage, StageFailed
from .stages import StageContext

STAGE = "model"
USER_AGENT = "callback-worker/1 (image model stage)"
MODEL_JPEG_QUALITY = 95  # what the model sees should not lose detail to compression
MODEL_PNG_COMPRESS_LEVEL = 1  # the upload is transient: favour speed
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class AttemptFailure:
    """A model attempt that may be worth retrying: an HTTP status or a transport error kind."""

    status: int | None
    kind: str | None  # "timeout", "connect", "protocol", "network" (as the callback sender names them)
    detail: str

    def describe(self) -> str:
        """``HTTP 503`` or ``timeout error (...)``: what went wrong, for the error message."""
        return f"HTTP {self.status}" if self.status is not None else f"{self.kind} error ({self.detail})"


def check_model_params(params: Mapping[str, Any], config: ImageConfig) -> None:
    """Before any work: the stage must have a URL, and a task's ``model_url`` must be allowed."""
    url = params.get("model_url")
    if url is None:
        if not config.model.url:
            raise StageFailed(
                "model_not_configured",
                "the model stage has no URL: set IMAGE_MODEL_URL, or give the task a model_url param",
                stage=STAGE,
            )
        return
    if not isinstance(url, str) or not _is_http_url(url):
        raise InvalidImage("invalid_params", "params.model_url must be an absolute http(s) URL", stage=STAGE)
    if not config.model.allows(url):
        where = "IMAGE_MODEL_URL_PREFIXES" if config.model.url_prefixes else "the origin of IMAGE_MODEL_URL"
        raise InvalidImage(
            "invalid_params",
            f"params.model_url {describe(url)} is not allowed: it must start with {where}",
            stage=STAGE,
        )


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def model_stage(image: Image.Image, context: StageContext) -> Image.Image:
    """Send the image to the model service; return the image it answers (see the module docstring)."""
    url = context.params.get("model_url") or context.config.model.url
    body, media_type = encode_for_model(image, context.image_format)
    limits = context.config.limits
    data = call_model(url, body, media_type, context.config.model, max_bytes=limits.max_bytes, task_id=context.task_id)
    try:
        decoded = decode_image(data, limits)
    except InvalidImage as e:
        raise StageFailed(
            "model_bad_response",
            f"the model at {describe(url)} answered with an unusable image ({e.code}: {e.message})",
            stage=STAGE,
        ) from e
    context.image_format = decoded.format
    return decoded.image


def encode_for_model(image: Image.Image, image_format: str) -> tuple[bytes, str]:
    """The request body and its media type: PNG for PNG input or alpha, else JPEG."""
    buffer = io.BytesIO()
    fmt = "PNG" if image_format == "PNG" or has_alpha(image) else "JPEG"
    if fmt == "PNG":
        image.save(buffer, "PNG", compress_level=MODEL_PNG_COMPRESS_LEVEL)
    else:
        image.save(buffer, "JPEG", quality=MODEL_JPEG_QUALITY)
    return buffer.getvalue(), MEDIA_TYPES[fmt]


def call_model(url: str, body: bytes, media_type: str, model: ModelConfig, *, max_bytes: int, task_id: str) -> bytes:
    """POST ``body`` with retries from synchronous code; the answer's bytes, or :class:`StageFailed`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(post_image(url, body, media_type, model, max_bytes=max_bytes, task_id=task_id))
    raise RuntimeError(
        "the image pipeline is synchronous and this thread runs an event loop: "
        "call it with asyncio.to_thread(run_pipeline, ...)"
    )


async def post_image(
    url: str, body: bytes, media_type: str, model: ModelConfig, *, max_bytes: int, task_id: str
) -> bytes:
    """POST ``body`` to ``url``, retrying as the module docstring says; the 2xx answer's bytes."""
    timeout = aiohttp.ClientTimeout(total=model.timeout, sock_connect=model.connect_timeout)
    headers = {
        "content-type": media_type,
        "accept": "image/*",
        "accept-encoding": "identity",  # images are compressed already; no gzip bombs to inflate
        "user-agent": USER_AGENT,
        "x-task-id": task_id,
    }
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False, trust_env=False) as session:
        attempts = 0
        while True:
            attempts += 1
            outcome = await _attempt(session, url, body, headers, max_bytes)
            if isinstance(outcome, bytes):
                return outcome
            if classify(outcome.status, outcome.kind) is Verdict.FINAL or attempts > model.retries:
                raise _failure(url, outcome, attempts, model)
            await asyncio.sleep(compute_backoff(attempts, model.schedule))


async def _attempt(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], max_bytes: int
) -> bytes | AttemptFailure:
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            if not 200 <= response.status < 300:
                return AttemptFailure(response.status, None, response.reason or "")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise _bad_response(url, f"it is {encoding}-encoded; answer the image bytes as they are")
            if response.content_length is not None and response.content_length > max_bytes:
                raise _bad_response(url, f"it declares {response.content_length} bytes; the limit is {max_bytes}")
            return await _read_bounded(response, url, max_bytes)
    except StageFailed:
        raise
    except TimeoutError as e:  # asyncio's total timeout and aiohttp's connect/read timeouts alike
        return AttemptFailure(None, "timeout", type(e).__name__)
    except aiohttp.ClientConnectorError as e:
        return AttemptFailure(None, "connect", str(e)[:200])
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as e:
        return AttemptFailure(None, "protocol", f"{type(e).__name__}: {e}"[:200])
    except (aiohttp.ClientError, OSError) as e:
        return AttemptFailure(None, "network", f"{type(e).__name__}: {e}"[:200])


async def _read_bounded(response: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            response.close()  # do not drain the rest; drop the connection
            raise _bad_response(url, f"it is larger than {max_bytes} bytes (IMAGE_MAX_BYTES)")
        chunks.append(chunk)
    if not total:
        raise _bad_response(url, "the body is empty")
    return b"".join(chunks)


def _bad_response(url: str, why: str) -> StageFailed:
    return StageFailed("model_bad_response", f"the model at {describe(url)} answered 2xx but {why}", stage=STAGE)


def _failure(url: str, last: AttemptFailure, attempts: int, model: ModelConfig) -> StageFailed:
    where = describe(url)
    tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
    if last.kind == "timeout":
        return StageFailed(
            "model_timeout",
            f"the model at {where} did not answer within {model.timeout:g} s ({tries}); "
            "check the service, or raise IMAGE_MODEL_TIMEOUT",
            stage=STAGE,
        )
    if last.status is not None and 300 <= last.status < 400:
        advice = "redirects are not followed: configure the final URL"
    elif last.status is not None and classify(last.status) is Verdict.FINAL:
        advice = "the service refused the request; not retried"
    else:
        advice = "check that the service is up, or raise IMAGE_MODEL_RETRIES"
    return StageFailed(
        "model_failed", f"the model at {where} failed: {last.describe()} after {tries}; {advice}", stage=STAGE
    )
