"""One image through a task's stages: decode (always validated), the stages in order, save.

The stage list comes from ``IMAGE_STAGES`` or the task; every name is resolved
and every stage's params check runs before the input is even read, so an
unknown stage or a bad param fails the task without any work done. Timings
(seconds, ``time.perf_counter``) are kept per step: ``decode``, each stage,
``save``; a failure carries the timings up to and including the failing step.

When the first stage after ``validate`` is ``resize``, a JPEG is decoded at a
reduced scale (see :func:`~worker.images.decode.decode_image`): the typical
photo then needs a fraction of the memory, with the same output size.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from types import MappingProxyType
from typing import Any

from PIL import Image

from ..errors import SettingsError
from .config import ImageConfig
from .convert import output_format_for, to_output_mode, to_working_mode
from .decode import decode_image
from .errors import ImageError, InvalidImage, StageFailed
from .media import encode_image, read_media_file, save_result
from .model_stage import check_model_params, model_stage
from .stages import JPEG_QUALITY_RANGE, OFFLINE_STAGES, RegisteredStage, StageContext, StageRegistry, int_param

DECODE = "decode"
SAVE = "save"

DEFAULT_REGISTRY = StageRegistry((*OFFLINE_STAGES, RegisteredStage("model", model_stage, check_model_params)))


@dataclass(frozen=True)
class PipelineResult:
    """The saved result of one task."""

    path: str  # relative to MEDIA_ROOT: image_editor/<32 hex>.jpg|.png
    image_b64: str  # base64 of the saved file's bytes
    timings: dict[str, float]  # seconds: decode, each stage, save (in that order)
    width: int
    height: int
    format: str  # "JPEG" or "PNG"
    size_bytes: int
    stages: tuple[str, ...]


def run_pipeline(
    source: bytes | str | PurePath,
    config: ImageConfig,
    *,
    stages: Sequence[str] | str | None = None,
    params: Mapping[str, Any] | None = None,
    task_id: str = "",
    registry: StageRegistry = DEFAULT_REGISTRY,
) -> PipelineResult:
    """Decode ``source``, run the stages, save the result under ``MEDIA_ROOT/image_editor/``.

    ``source`` is the image's bytes, or a path relative to ``MEDIA_ROOT``
    (``image_path``; confined to the root). ``stages`` overrides
    ``IMAGE_STAGES`` (a list, or a comma-separated string); ``params`` are the
    task's params (``short_side``, ``jpeg_quality``, ``model_url``, and whatever
    plug-in stages read). Raises :class:`~worker.images.errors.ImageError`:
    :class:`InvalidImage` for bad input, :class:`StageFailed` otherwise.

    Synchronous and CPU-bound (Pillow releases the GIL while it decodes and
    resizes): call it from a worker thread, never on an event loop's thread.
    """
    _refuse_event_loop_thread()
    names = stage_names(stages, config)
    plan = registry.resolve(names)
    task_params = _checked_params(params, plan, config)
    timings: dict[str, float] = {}
    try:
        with _timed(timings, DECODE):
            if isinstance(source, (str, PurePath)):
                data = read_media_file(config.media_root, source, max_bytes=config.limits.max_bytes)
            elif isinstance(source, bytes):
                data = source
            else:
                raise TypeError(f"source must be bytes or a path under MEDIA_ROOT, not {type(source).__name__}")
            decoded = decode_image(data, config.limits, shrink_to=_shrink_target(plan, task_params, config))
            del data
        drafted = decoded.full_size != decoded.image.size
        context = StageContext(
            task_id, config, task_params, decoded.format, timings, full_size=decoded.full_size if drafted else None
        )
        image = decoded.image
        del decoded
        for stage in plan:
            with _timed(timings, stage.name):
                image = _run_stage(stage, image, context)
            if stage.name != "validate":
                context.full_size = None
        with _timed(timings, SAVE):
            output_format = context.output_format or output_format_for(context.image_format)
            image = to_output_mode(image, output_format)
            saved = save_result(
                encode_image(image, output_format, jpeg_quality=context.jpeg_quality), output_format, config.media_root
            )
    except ImageError as e:
        e.timings = dict(timings)
        raise
    return PipelineResult(
        saved.path, saved.image_b64, timings, image.width, image.height, output_format, saved.size_bytes, names
    )


def check_config(config: ImageConfig, registry: StageRegistry = DEFAULT_REGISTRY) -> None:
    """Fail at start-up (or refuse a config reload) when ``IMAGE_STAGES`` cannot work.

    Raises :class:`~worker.errors.SettingsError` for an unknown stage name, or a
    stage whose configuration is missing (``model`` without ``IMAGE_MODEL_URL``).
    """
    try:
        for stage in registry.resolve(config.stages):
            if stage.check is not None:
                stage.check(MappingProxyType({}), config)
    except ImageError as e:
        raise SettingsError(f"IMAGE_STAGES={','.join(config.stages)} cannot run: {e.message}") from e


def stage_names(stages: Sequence[str] | str | None, config: ImageConfig) -> tuple[str, ...]:
    """The task's stage list (a list or a comma-separated string), or ``IMAGE_STAGES`` when it gives none."""
    if stages is None:
        return config.stages
    names = tuple(part.strip() for part in stages.split(",")) if isinstance(stages, str) else stages
    if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
        raise InvalidImage("invalid_params", f"stages must be a list of stage names, got {stages!r:.100}")
    if not names:
        raise InvalidImage("invalid_params", "stages is empty; leave it out to use the configured IMAGE_STAGES")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidImage("invalid_params", f"stage {repeated[0]!r} is listed twice", stage=repeated[0])
    return tuple(names)


def _checked_params(
    params: Mapping[str, Any] | None, plan: Sequence[RegisteredStage], config: ImageConfig
) -> Mapping[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, Mapping) or not all(isinstance(key, str) for key in params):
        raise InvalidImage("invalid_params", f"params must be an object with string keys, got {params!r:.100}")
    frozen = MappingProxyType(dict(params))
    int_param(frozen, "jpeg_quality", JPEG_QUALITY_RANGE, stage=SAVE)  # used when saving, whatever the stages
    for stage in plan:
        if stage.check is not None:
            try:
                stage.check(frozen, config)
            except ImageError as e:
                e.stage = e.stage or stage.name
                raise
    return frozen


def _shrink_target(plan: Sequence[RegisteredStage], params: Mapping[str, Any], config: ImageConfig) -> int | None:
    # Only a resize that comes before anything that needs full resolution may shrink the decode.
    first = next((stage.name for stage in plan if stage.name != "validate"), None)
    if first != "resize":
        return None
    return int(params.get("short_side", config.short_side))


def _run_stage(stage: RegisteredStage, image: Image.Image, context: StageContext) -> Image.Image:
    try:
        result = stage.run(image, context)
    except ImageError as e:
        if e.stage is None:
            e.stage = stage.name
        raise
    except MemoryError:
        raise
    except Exception as e:
        raise StageFailed(
            "stage_failed", f"stage {stage.name!r} failed: {type(e).__name__}: {e}"[:500], stage=stage.name
        ) from e
    if not isinstance(result, Image.Image):
        raise StageFailed(
            "stage_failed", f"stage {stage.name!r} returned {type(result).__name__}, not an image", stage=stage.name
        )
    return to_working_mode(result)  # the next stage gets L, LA, RGB or RGBA whatever a plug-in returned


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = time.perf_counter() - started


def _refuse_event_loop_thread() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "run_pipeline is synchronous and CPU-bound; from async code call it with asyncio.to_thread(run_pipeline, ...)"
    )
