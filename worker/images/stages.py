"""Named pipeline stages: the contract, the registry and the built-in offline stages.

A stage is a plain function ``(image, context) -> image``. It receives an
image in L, LA, RGB or RGBA with its pixels loaded, may return the same object
or a new one, and raises :class:`~worker.images.errors.ImageError` (with its
own code) for a failure it understands; anything else it raises becomes
``stage_failed``. A stage may register a ``check``, run on the task's params
before any stage runs, so bad params fail the task before any work is done.

Built-in stages:

``validate``   re-checks the current image against ``IMAGE_MAX_PIXELS`` and
               brings it to a working mode. The input is always fully
               validated when it is decoded, whatever the stage list; this
               stage guards images produced by earlier stages (a plug-in).
``resize``     shorter side to ``IMAGE_SHORT_SIDE`` (param ``short_side``),
               aspect ratio kept, Lanczos. Smaller images are never upscaled.
``format``     picks the output format (PNG stays PNG with its alpha; anything
               else becomes an RGB JPEG, alpha flattened onto white) and
               converts the pixels. Saving applies the same conversion if
               the stage list leaves ``format`` out.
``grayscale``  drops colour, keeps alpha.
``model``      see :mod:`worker.images.model_stage`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..config.parsers import RESERVED_STAGE_NAMES, STAGE_NAME
from .config import ImageConfig
from .convert import fit_short_side, output_format_for, to_output_mode, to_working_mode
from .decode import check_pixels
from .errors import InvalidImage

RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0  # integer pre-reduction for big shrinks; at >= 3 indistinguishable from plain Lanczos
SHORT_SIDE_RANGE = (16, 8192)  # as IMAGE_SHORT_SIDE
JPEG_QUALITY_RANGE = (1, 95)  # as IMAGE_JPEG_QUALITY


@dataclass
class StageContext:
    """What a stage knows besides the image: the task, the configuration, and what earlier steps decided."""

    task_id: str
    config: ImageConfig
    params: Mapping[str, Any]  # the task's params, read-only
    image_format: str  # format the current image came in: the input's, or a model's answer
    timings: dict[str, float] = field(default_factory=dict)  # seconds per finished step, in order
    output_format: str | None = None  # set by the format stage
    full_size: tuple[int, int] | None = None  # set while the image is a reduced-scale decode (JPEG draft)

    @property
    def short_side(self) -> int:
        """The resize target: the task's ``short_side`` param, else ``IMAGE_SHORT_SIDE``."""
        return int(self.params.get("short_side", self.config.short_side))

    @property
    def jpeg_quality(self) -> int:
        """JPEG quality: the task's ``jpeg_quality`` param, else ``IMAGE_JPEG_QUALITY``."""
        return int(self.params.get("jpeg_quality", self.config.jpeg_quality))


Stage = Callable[[Image.Image, StageContext], Image.Image]
ParamsCheck = Callable[[Mapping[str, Any], ImageConfig], None]


@dataclass(frozen=True)
class RegisteredStage:
    """A stage function under its name, with its optional params check."""

    name: str
    run: Stage
    check: ParamsCheck | None = None


class StageRegistry:
    """Stages by name. Register plug-ins at import time, before the worker resolves its stage list."""

    def __init__(self, stages: Iterable[RegisteredStage] = ()) -> None:
        self._stages: dict[str, RegisteredStage] = {}
        for stage in stages:
            self.register(stage.name, stage.run, check=stage.check)

    def register(self, name: str, run: Stage, *, check: ParamsCheck | None = None) -> Stage:
        """Add ``run`` as stage ``name``; returns ``run``. Names are unique, lowercase, <= 32 characters."""
        if not STAGE_NAME.fullmatch(name) or name in RESERVED_STAGE_NAMES:
            raise ValueError(f"invalid stage name {name!r}: use 1-32 of a-z, 0-9, '_' (not 'decode' or 'save')")
        if name in self._stages:
            raise ValueError(f"a stage named {name!r} is already registered")
        self._stages[name] = RegisteredStage(name, run, check)
        return run

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._stages))

    def copy(self) -> StageRegistry:
        """An independent registry with the same stages (tests add stages to a copy)."""
        return StageRegistry(self._stages.values())

    def resolve(self, names: Iterable[str]) -> tuple[RegisteredStage, ...]:
        """The stages for ``names``, in order; ``unknown_stage`` names the first unknown one and lists the known."""
        resolved = []
        for name in names:
            stage = self._stages.get(name) if isinstance(name, str) else None
            if stage is None:
                raise InvalidImage(
                    "unknown_stage",
                    f"there is no stage {name!r}; known stages: {', '.join(self.names())}",
                    stage=name if isinstance(name, str) else None,
                )
            resolved.append(stage)
        return tuple(resolved)


def int_param(params: Mapping[str, Any], key: str, bounds: tuple[int, int], *, stage: str) -> None:
    """Check that ``params[key]``, when present, is an integer within ``bounds`` (inclusive)."""
    if key not in params:
        return
    value = params[key]
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidImage(
            "invalid_params", f"params.{key} must be an integer {low}..{high}, got {value!r}", stage=stage
        )


def validate(image: Image.Image, context: StageContext) -> Image.Image:
    """Refuse an image over ``IMAGE_MAX_PIXELS``; return it in a working mode."""
    check_pixels(context.full_size or image.size, context.config.limits.max_pixels, stage="validate")
    return to_working_mode(image)


def resize(image: Image.Image, context: StageContext) -> Image.Image:
    """Shorter side to the target size, aspect ratio kept; images already that small or smaller are kept as they are."""
    # After a reduced-scale decode, the target comes from the full-resolution size, so the result
    # is exactly what a full decode would give (4000x3000 -> 467x350 either way).
    target = fit_short_side(context.full_size or image.size, context.short_side)
    if target == image.size:
        return image
    return image.resize(target, RESAMPLE, reducing_gap=REDUCING_GAP)


def _check_resize(params: Mapping[str, Any], config: ImageConfig) -> None:
    int_param(params, "short_side", SHORT_SIDE_RANGE, stage="resize")


def format_output(image: Image.Image, context: StageContext) -> Image.Image:
    """Choose the output format from the current image's format and convert the pixels for it."""
    context.output_format = output_format_for(context.image_format)
    return to_output_mode(image, context.output_format)


def grayscale(image: Image.Image, context: StageContext) -> Image.Image:
    """Drop colour; alpha is kept."""
    image = to_working_mode(image)
    grey = image.convert("LA" if "A" in image.getbands() else "L")
    if image.mode.startswith("RGB"):
        grey.info.pop("icc_profile", None)  # an RGB profile does not describe grey pixels
    return grey


OFFLINE_STAGES = (
    RegisteredStage("validate", validate),
    RegisteredStage("resize", resize, _check_resize),
    RegisteredStage("format", format_output),
    RegisteredStage("grayscale", grayscale),
)
