"""Image I/O and the pluggable stage pipeline of image-edit tasks, as plain functions.

An actor builds the configuration once and runs one task per call::

    config = ImageConfig.from_settings(settings)
    check_config(config)                      # at start-up and on a config reload
    source = decode_base64_image(task["image"], max_bytes=config.limits.max_bytes)  # or task["image_path"]
    result = run_pipeline(source, config, stages=task.get("stages"), params=task.get("params"),
                          task_id=task["task_id"])
    # result.path, result.image_b64, result.timings; on failure ImageError.as_payload()

Modules: :mod:`.errors` (codes), :mod:`.config`, :mod:`.decode` (validation),
:mod:`.convert` (modes, geometry), :mod:`.media` (files under MEDIA_ROOT),
:mod:`.stages` (contract, registry, offline stages), :mod:`.model_stage` (HTTP
model service), :mod:`.pipeline`.
"""

from __future__ import annotations

from .config import ImageConfig, ImageLimits, ModelConfig
from .decode import DecodedImage, decode_base64_image, decode_image
from .errors import ImageError, InvalidImage, StageFailed
from .media import read_media_file, resolve_media_path
from .pipeline import DEFAULT_REGISTRY, PipelineResult, check_config, run_pipeline
from .stages import RegisteredStage, Stage, StageContext, StageRegistry

__all__ = [
    "DEFAULT_REGISTRY",
    "DecodedImage",
    "ImageConfig",
    "ImageError",
    "ImageLimits",
    "InvalidImage",
    "ModelConfig",
    "PipelineResult",
    "RegisteredStage",
    "Stage",
    "StageContext",
    "StageFailed",
    "StageRegistry",
    "check_config",
    "decode_base64_image",
    "decode_image",
    "read_media_file",
    "resolve_media_path",
    "run_pipeline",
]
