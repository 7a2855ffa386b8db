"""Pixel modes, output formats and resize geometry, as small pure functions.

Every image a stage receives is in one of :data:`WORKING_MODES` (8 bits per
channel, with or without alpha), whatever the file held: palette, CMYK,
1-bit and 16-bit images are converted once, when decoded.
"""

from __future__ import annotations

from PIL import Image

WORKING_MODES = ("L", "LA", "RGB", "RGBA")
OUTPUT_FORMATS = ("JPEG", "PNG")
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png"}
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
BACKGROUND = (255, 255, 255)  # what transparent pixels become in a JPEG

# A conversion that keeps the colour space keeps the embedded ICC profile (Display P3 photos
# stay Display P3); any other conversion drops it, as the profile would describe the wrong data.
_SAME_SPACE = {
    ("L", "LA"),
    ("LA", "L"),
    ("RGB", "RGBA"),
    ("RGBA", "RGB"),
    ("P", "RGB"),
    ("P", "RGBA"),
    ("PA", "RGBA"),
    ("RGBX", "RGB"),
    ("RGBa", "RGBA"),
    ("La", "LA"),
    ("1", "L"),
}


def has_alpha(image: Image.Image) -> bool:
    """Whether the image has an alpha channel or a transparent colour."""
    return "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info


def to_working_mode(image: Image.Image) -> Image.Image:
    """The image in L, LA, RGB or RGBA; unchanged when it already is.

    16-bit greyscale (and other I and F images) is scaled to 8 bits (Pillow's plain conversion
    would clip everything above 255 to white); CMYK, YCbCr and the like become
    RGB; palette images become RGB, or RGBA when they have a transparent colour.
    """
    mode = image.mode
    if mode in WORKING_MODES and "transparency" not in image.info:
        return image
    if mode in ("LA", "RGBA"):  # a stray transparent colour next to a real alpha channel
        return _converted(image, image.copy(), keep_profile=True)
    if mode in ("L", "RGB"):  # with a transparent colour (PNG tRNS): make it an alpha channel
        target = mode + "A"
    elif mode.startswith("I") or mode == "F":
        scaled = image.convert("I").point(lambda value: value * (1 / 256))
        return _converted(image, scaled.convert("L"), keep_profile=True)
    elif mode in ("1", "La"):
        target = "L" if mode == "1" else "LA"
    else:
        target = "RGBA" if has_alpha(image) else "RGB"
    return _converted(image, image.convert(target), keep_profile=(mode, target) in _SAME_SPACE)


def _converted(source: Image.Image, result: Image.Image, *, keep_profile: bool) -> Image.Image:
    result.info.pop("transparency", None)
    if not keep_profile:
        result.info.pop("icc_profile", None)
    elif "icc_profile" in source.info:
        result.info["icc_profile"] = source.info["icc_profile"]
    return result


def output_format_for(image_format: str) -> str:
    """The format a result is saved in: PNG stays PNG (alpha kept), everything else becomes JPEG."""
    return "PNG" if image_format == "PNG" else "JPEG"


def to_output_mode(image: Image.Image, output_format: str) -> Image.Image:
    """The image in a mode ``output_format`` stores; unchanged when it already is.

    PNG keeps L, LA, RGB and RGBA. JPEG gets RGB: alpha is flattened onto white
    (transparent areas become white, not black) and greyscale is expanded.
    """
    image = to_working_mode(image)
    if output_format == "PNG" or image.mode == "RGB":
        return image
    if image.mode == "L":
        return _converted(image, image.convert("RGB"), keep_profile=False)  # a grey profile cannot describe RGB
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    flat = Image.new("RGB", image.size, BACKGROUND)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    flat.info.update(image.info)
    return _converted(image, flat, keep_profile=image.mode == "RGBA")


def fit_short_side(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """The size with the shorter side at ``short_side`` and the same aspect ratio.

    Images whose shorter side is already ``short_side`` or less are never
    upscaled: their size is returned unchanged. The longer side is rounded to
    the nearest pixel (halves up), e.g. 1000x500 -> 700x350, 4000x3000 -> 467x350.
    """
    width, height = size
    shorter = min(width, height)
    if shorter <= short_side:
        return size
    longer = (2 * max(width, height) * short_side + shorter) // (2 * shorter)
    return (short_side, longer) if width <= height else (longer, short_side)
