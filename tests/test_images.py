"""Image I/O: settings, validation and decoding, pixel modes and geometry, files under MEDIA_ROOT.

Every image is a real one made by Pillow (see ``image_fixtures``); MEDIA_ROOT is ``tmp_path``.
"""

from __future__ import annotations

import base64
import io
import os
import re
import stat
import warnings
from pathlib import Path

import image_fixtures as fx
import pytest
from conftest import SECRET
from PIL import Image, ImageOps

from worker.config.settings import Settings
from worker.errors import SettingsError, WorkerError
from worker.images import ImageConfig, ImageLimits, InvalidImage, ModelConfig, decode_base64_image, decode_image
from worker.images.convert import fit_short_side, to_output_mode, to_working_mode
from worker.images.decode import sniff_format
from worker.images.errors import FAILURE_CODES, INVALID_CODES, ImageError, StageFailed
from worker.images.media import encode_image, read_media_file, resolve_media_path, save_result

LIMITS = ImageLimits()


def load_settings(**env: str) -> Settings:
    return Settings.from_env({"CALLBACK_SIGNING_SECRET": SECRET, **env})


def refused(data: bytes, limits: ImageLimits = LIMITS, **kwargs) -> InvalidImage:
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, limits, **kwargs)
    assert caught.value.stage == "decode"
    return caught.value


# -- settings ---------------------------------------------------------------------------------------


def test_image_settings_defaults():
    settings = load_settings()
    assert settings.image_stages == ("validate", "resize", "format")
    assert settings.image_short_side == 350
    assert settings.image_max_pixels == 50_000_000
    assert settings.image_max_bytes == 20 * 1024 * 1024
    assert settings.image_formats == ("JPEG", "PNG", "WEBP")
    assert settings.image_jpeg_quality == 90
    assert settings.image_model_url == ""
    assert settings.image_model_url_prefixes == ()
    assert settings.image_model_timeout == 60.0
    assert settings.image_model_retries == 2
    assert settings.image_model_backoff == 1.0


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("IMAGE_STAGES", "validate,Resize", "lowercase"),
        ("IMAGE_STAGES", "validate,,format", "lowercase"),
        ("IMAGE_STAGES", "resize,resize", "listed twice"),
        ("IMAGE_STAGES", "decode,resize", "pipeline step"),
        ("IMAGE_SHORT_SIDE", "0", ">= 16"),
        ("IMAGE_SHORT_SIDE", "350.5", "invalid literal"),
        ("IMAGE_MAX_PIXELS", "100000000", "1..89478485"),
        ("IMAGE_MAX_BYTES", "0", ">= 1"),
        ("IMAGE_FORMATS", "JPEG,TIFF", "unknown format 'TIFF'"),
        ("IMAGE_JPEG_QUALITY", "100", "<= 95"),
        ("IMAGE_MODEL_URL", "ftp://models.internal/x", "http:// or https://"),
        ("IMAGE_MODEL_URL", "file:///etc/passwd", "http:// or https://"),
        ("IMAGE_MODEL_URL", "http://host:99999/", "cannot be parsed"),
        ("IMAGE_MODEL_URL_PREFIXES", "http://a/,gopher://b/", "http:// or https://"),
        ("IMAGE_MODEL_TIMEOUT", "0", "> 0"),
        ("IMAGE_MODEL_RETRIES", "11", "<= 10"),
        ("IMAGE_MODEL_BACKOFF", "-1", ">= 0"),
    ],
)
def test_malformed_image_settings_name_the_variable_and_the_reason(name, raw, why):
    with pytest.raises(SettingsError) as caught:
        load_settings(**{name: raw})
    assert name in str(caught.value)
    assert why in str(caught.value)


def test_the_model_url_never_appears_in_errors_or_repr():
    with pytest.raises(SettingsError) as caught:
        load_settings(IMAGE_MODEL_URL="ftp://models.internal/x?code=s3cr3t")
    assert "s3cr3t" not in str(caught.value)
    settings = load_settings(IMAGE_MODEL_URL="https://fn.example/api/run?code=s3cr3t")
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in repr(ImageConfig.from_settings(settings))


def test_image_config_from_settings(tmp_path):
    settings = load_settings(
        MEDIA_ROOT=str(tmp_path),
        IMAGE_STAGES="validate,model,format",
        IMAGE_MAX_BYTES="5000",
        IMAGE_FORMATS="PNG",
        IMAGE_MODEL_URL="http://127.0.0.1:9/x",
        IMAGE_MODEL_TIMEOUT="2",
        IMAGE_MODEL_RETRIES="3",
        IMAGE_MODEL_BACKOFF="0.5",
    )
    config = ImageConfig.from_settings(settings)
    assert config.media_root == tmp_path
    assert config.stages == ("validate", "model", "format")
    assert config.limits == ImageLimits(5000, 50_000_000, ("PNG",))
    assert config.model.url == "http://127.0.0.1:9/x"
    assert config.model.connect_timeout == 2.0  # capped at the total timeout
    assert config.model.schedule == (0.5, 1.0, 2.0)


@pytest.mark.parametrize(
    ("prefixes", "url", "allowed"),
    [
        ((), "http://models.internal:8000/other-model", True),
        ((), "http://MODELS.internal:8000/x", True),
        ((), "http://models.internal/x", False),  # another port
        ((), "https://models.internal:8000/x", False),  # another scheme
        ((), "http://models.internal:8000@evil.example/x", False),
        (("http://gpu-1:9000/v1/",), "http://gpu-1:9000/v1/upscale", True),
        (("http://gpu-1:9000/v1/",), "http://gpu-1:9000/v2/upscale", False),
        (("http://gpu-1:9000/v1/",), "http://models.internal:8000/x", False),  # prefixes replace the origin rule
        (("http://gpu-1",), "http://gpu-1.evil.example/x", False),
        (("http://gpu-1",), "http://gpu-1/x", True),
    ],
)
def test_which_task_model_urls_are_allowed(prefixes, url, allowed):
    model = ModelConfig(url="http://models.internal:8000/remove-bg", url_prefixes=prefixes)
    assert model.allows(url) is allowed


# -- errors -----------------------------------------------------------------------------------------


def test_error_tree_and_payload():
    invalid = InvalidImage("corrupt", "bad bytes", stage="decode")
    assert isinstance(invalid, ImageError)
    assert isinstance(invalid, WorkerError)
    assert isinstance(invalid, ValueError)  # bad input, as the house style asks
    assert invalid.as_payload() == {"code": "corrupt", "message": "bad bytes", "stage": "decode"}
    failed = StageFailed("model_timeout", "slow", stage="model")
    assert not isinstance(failed, ValueError)
    assert not INVALID_CODES & FAILURE_CODES
    with pytest.raises(ValueError, match="no code"):
        InvalidImage("model_timeout", "a failure code on an input error")


# -- decoding: what is accepted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt", "mode"),
    [
        (fx.jpeg(), "JPEG", "RGB"),
        (fx.png_rgba(), "PNG", "RGBA"),
        (fx.webp(), "WEBP", "RGB"),
        (fx.webp(alpha=True), "WEBP", "RGBA"),
        (fx.palette_png(), "PNG", "RGB"),
        (fx.palette_png(transparent=True), "PNG", "RGBA"),
        (fx.cmyk_jpeg(), "JPEG", "RGB"),
        (fx.encode(fx.photo((64, 48), "L"), "PNG"), "PNG", "L"),
        (fx.encode(fx.photo((64, 48), "LA"), "PNG"), "PNG", "LA"),
        (fx.encode(fx.photo((64, 48), "1"), "PNG"), "PNG", "L"),
        (fx.encode(fx.photo((64, 48), "L"), "PNG", transparency=0), "PNG", "LA"),
        (fx.sixteen_bit_png(), "PNG", "L"),
    ],
    ids=[
        "jpeg",
        "png-alpha",
        "webp",
        "webp-alpha",
        "palette",
        "palette-transparent",
        "cmyk",
        "grey",
        "grey-alpha",
        "1-bit",
        "grey-trns",
        "16-bit",
    ],
)
def test_accepted_images_decode_into_a_working_mode(data, fmt, mode):
    decoded = decode_image(data, LIMITS)
    assert decoded.format == fmt
    assert decoded.image.mode == mode
    assert decoded.full_size == decoded.image.size
    decoded.image.tobytes()  # pixels are loaded and usable


def test_sixteen_bit_grey_is_scaled_not_clipped():
    image = decode_image(fx.sixteen_bit_png(value=32768), LIMITS).image
    assert fx.pixel(image, (0, 0)) == (255,)
    assert fx.pixel(image, (5, 5)) == (128,)  # plain convert("L") would clip this to 255


def test_cmyk_becomes_rgb_and_loses_its_profile_while_rgb_keeps_its_own():
    profile = fx.srgb_profile()
    cmyk = decode_image(fx.cmyk_jpeg(icc_profile=profile), LIMITS).image
    assert cmyk.mode == "RGB"
    assert "icc_profile" not in cmyk.info  # a CMYK profile would mislabel RGB pixels
    rgb = decode_image(fx.jpeg(icc_profile=profile), LIMITS).image
    assert rgb.info["icc_profile"] == profile
    saved = Image.open(io.BytesIO(encode_image(rgb, "JPEG", jpeg_quality=90)))
    assert saved.info["icc_profile"] == profile


def test_metadata_other_than_the_colour_profile_is_not_written():
    data = fx.jpeg(orientation=1, comment=b"internal note")
    image = decode_image(data, LIMITS).image
    saved = Image.open(io.BytesIO(encode_image(image, "JPEG", jpeg_quality=90)))
    assert "exif" not in saved.info
    assert "comment" not in saved.info


def test_gif_is_refused_unless_allowed_then_only_when_still():
    assert refused(fx.gif()).code == "unsupported_format"
    with_gif = ImageLimits(formats=("JPEG", "PNG", "WEBP", "GIF"))
    decoded = decode_image(fx.gif(), with_gif)
    assert (decoded.format, decoded.image.size) == ("GIF", (200, 100))
    error = refused(fx.gif(frames=3), with_gif)
    assert error.code == "animated"
    assert "3 frames" in error.message


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animated_webp_and_png_are_refused(fmt):
    error = refused(fx.animated(fmt))
    assert error.code == "animated"
    assert "single frame" in error.message


def test_a_multi_picture_jpeg_is_its_primary_picture_not_an_animation():
    decoded = decode_image(fx.mpo(), LIMITS)
    assert decoded.format == "JPEG"
    assert decoded.image.size == (320, 240)
    red = fx.pixel(decoded.image, (10, 120))
    assert red[0] > 180 and red[2] < 80


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_imageops_exif_transpose(orientation):
    data = fx.encode(fx.halves((60, 40)), "PNG")
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = fx.encode(Image.open(io.BytesIO(data)), "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(data, LIMITS)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert decoded.image.size == reference.size == decoded.full_size
    assert decoded.image.tobytes() == reference.tobytes()


def test_an_exif_rotated_photo_comes_out_upright():
    data = fx.encode(fx.halves((200, 100)), "JPEG", quality=95, exif=_orientation_exif(6))
    image = decode_image(data, LIMITS).image
    assert image.size == (100, 200)  # orientation 6: turn 90 degrees clockwise
    top, bottom = fx.pixel(image, (50, 20)), fx.pixel(image, (50, 180))
    assert top[0] > 180 and top[2] < 80  # the left half (red) is now on top
    assert bottom[2] > 180 and bottom[0] < 80


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unreadable_exif_is_ignored_like_browsers_do():
    broken = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03"  # IFD cut short
    data = fx.encode(fx.halves((60, 40)), "JPEG", quality=95, exif=broken)
    assert decode_image(data, LIMITS).image.size == (60, 40)


def test_a_large_jpeg_can_be_decoded_at_reduced_scale_for_a_resize():
    data = fx.jpeg((4000, 3000), quality=80)
    decoded = decode_image(data, LIMITS, shrink_to=350)
    assert decoded.image.size == (1000, 750)  # 1/4 scale: still >= 2x the 467x350 target
    assert decoded.full_size == (4000, 3000)
    rotated = decode_image(fx.jpeg((4000, 3000), quality=80, orientation=6), LIMITS, shrink_to=350)
    assert (rotated.image.size, rotated.full_size) == ((750, 1000), (3000, 4000))
    assert decode_image(fx.jpeg((600, 400)), LIMITS, shrink_to=350).image.size == (600, 400)
    flat_png = fx.encode(Image.new("RGB", (1600, 1200), fx.RED), "PNG")
    assert decode_image(flat_png, LIMITS, shrink_to=350).image.size == (1600, 1200)  # only JPEG has DCT scaling


# -- decoding: what is refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage bytes, not an image at all", b"\xff\xd8\xff" + b"\x00" * 200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64],
    ids=["empty", "garbage", "jpeg-signature-then-zeros", "png-signature-then-zeros"],
)
def test_corrupt_data_is_refused(data):
    error = refused(data)
    assert error.code in {"corrupt", "truncated"}
    if data[:1] in (b"", b"g"):
        assert error.code == "corrupt"
        assert "JPEG, PNG or WEBP" in error.message


def test_a_png_with_a_damaged_chunk_is_corrupt():
    data = bytearray(fx.encode(fx.photo((64, 64)), "PNG"))
    data[len(data) // 2] ^= 0xFF  # inside IDAT: its CRC no longer matches
    error = refused(bytes(data))
    assert error.code == "corrupt"


@pytest.mark.parametrize(
    "data",
    [fx.jpeg((400, 300)), fx.encode(fx.photo((400, 300)), "PNG"), fx.webp((400, 300))],
    ids=["jpeg", "png", "webp"],
)
def test_truncated_images_are_refused(data):
    error = refused(fx.truncated(data))
    assert error.code == "truncated"
    assert "complete file" in error.message


def test_a_truncated_jpeg_is_refused_at_reduced_scale_too():
    assert refused(fx.truncated(fx.jpeg((2000, 1500))), shrink_to=350).code == "truncated"


def test_a_header_claiming_ten_billion_pixels_trips_the_bomb_guard_without_decoding():
    error = refused(fx.png_claiming(100_000, 100_000))
    assert error.code == "decompression_bomb"
    assert "IMAGE_MAX_PIXELS" in error.message


def test_more_pixels_than_the_limit_are_refused_before_decoding():
    error = refused(fx.png_claiming(9000, 9000))  # 81 MP: under Pillow's guard, over the 50 MP default
    assert error.code == "too_many_pixels"
    assert "9000x9000" in error.message
    assert refused(fx.jpeg((300, 200)), ImageLimits(max_pixels=300 * 200 - 1)).code == "too_many_pixels"
    assert decode_image(fx.jpeg((300, 200)), ImageLimits(max_pixels=300 * 200)).image.size == (300, 200)


def test_pillows_bomb_warning_is_a_too_many_pixels_error_or_a_bomb_when_warnings_are_errors():
    claim = fx.png_claiming(10_000, 10_000)  # 100 MP: Pillow warns (> 89 MP) but does not refuse
    with pytest.warns(Image.DecompressionBombWarning):
        assert refused(claim).code == "too_many_pixels"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert refused(claim).code == "decompression_bomb"


def test_too_many_bytes_are_refused_before_anything_else():
    data = fx.jpeg((400, 300))
    error = refused(data, ImageLimits(max_bytes=len(data) - 1))
    assert error.code == "too_large"
    assert "IMAGE_MAX_BYTES" in error.message
    assert refused(b"x" * 101, ImageLimits(max_bytes=100)).code == "too_large"  # not even sniffed


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (fx.encode(fx.photo((32, 32)), "BMP"), "BMP"),
        (fx.encode(fx.photo((32, 32)), "TIFF"), "TIFF"),
        (b"%PDF-1.7\n...", "PDF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ],
)
def test_other_formats_are_named_and_refused(data, name):
    error = refused(data)
    assert error.code == "unsupported_format"
    assert f"is {name}" in error.message
    assert "IMAGE_FORMATS" in error.message


def test_only_allowed_formats_are_decoded():
    error = refused(fx.webp(), ImageLimits(formats=("JPEG", "PNG")))
    assert error.code == "unsupported_format"
    assert "JPEG or PNG" in error.message


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (fx.jpeg((8, 8)), "JPEG"),
        (fx.png_rgba((8, 8)), "PNG"),
        (fx.webp((8, 8)), "WEBP"),
        (fx.gif((8, 8)), "GIF"),
        (b"nothing", None),
    ],
)
def test_sniff_format(data, fmt):
    assert sniff_format(data) == fmt


# -- base64 -----------------------------------------------------------------------------------------


def test_base64_input_is_decoded_with_or_without_a_data_url_prefix_and_line_breaks():
    data = fx.jpeg((32, 32))
    text = base64.b64encode(data).decode()
    assert decode_base64_image(text, max_bytes=len(data)) == data
    assert decode_base64_image("data:image/jpeg;base64," + text, max_bytes=len(data)) == data
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_base64_image(wrapped, max_bytes=len(data)) == data


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("not base64!", "invalid_base64"),
        ("abc", "invalid_base64"),
        (b"AAAA", "invalid_base64"),
        (None, "invalid_base64"),
    ],
)
def test_bad_base64_is_refused(value, code):
    with pytest.raises(InvalidImage) as caught:
        decode_base64_image(value, max_bytes=1000)
    assert caught.value.code == code


def test_base64_of_too_many_bytes_is_refused_before_decoding():
    text = base64.b64encode(b"x" * 1000).decode()
    with pytest.raises(InvalidImage) as caught:
        decode_base64_image(text, max_bytes=999)
    assert caught.value.code == "too_large"
    assert decode_base64_image(text, max_bytes=1000) == b"x" * 1000


# -- modes and geometry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "short_side", "expected"),
    [
        ((1000, 500), 350, (700, 350)),
        ((500, 1000), 350, (350, 700)),
        ((4000, 3000), 350, (467, 350)),
        ((3000, 4000), 350, (350, 467)),
        ((351, 351), 350, (350, 350)),
        ((350, 10_000), 350, (350, 10_000)),  # shorter side already 350
        ((200, 100), 350, (200, 100)),  # never upscaled
        ((1001, 700), 350, (501, 350)),  # 500.5 rounds half up
        ((100_000, 400), 350, (87_500, 350)),
    ],
)
def test_fit_short_side(size, short_side, expected):
    assert fit_short_side(size, short_side) == expected


def test_jpeg_output_flattens_alpha_onto_white_and_png_keeps_it():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, 5, 10))
    flat = to_output_mode(image, "JPEG")
    assert flat.mode == "RGB"
    assert fx.pixel(flat, (8, 5)) == (255, 255, 255)  # transparent became white, not red or black
    assert fx.pixel(flat, (2, 5)) == (0, 0, 255)
    assert to_output_mode(image, "PNG") is image
    assert fx.pixel(to_output_mode(Image.new("LA", (4, 4), (0, 0)), "JPEG"), (0, 0)) == (255, 255, 255)
    assert fx.pixel(to_output_mode(Image.new("L", (4, 4), 7), "JPEG"), (0, 0)) == (7, 7, 7)


def test_a_stray_transparent_colour_next_to_an_alpha_channel_is_dropped():
    image = Image.new("RGBA", (2, 2), (1, 2, 3, 4))
    image.info["transparency"] = (1, 2, 3)
    working = to_working_mode(image)
    assert (working.mode, "transparency" in working.info) == ("RGBA", False)
    assert "transparency" in image.info  # the caller's image is left alone


def test_working_mode_leaves_working_images_alone():
    for mode in ("L", "LA", "RGB", "RGBA"):
        image = Image.new(mode, (2, 2))
        assert to_working_mode(image) is image


# -- files under MEDIA_ROOT -------------------------------------------------------------------------


def test_a_result_is_saved_atomically_under_a_fresh_name_and_its_base64_is_the_file(tmp_path):
    data = encode_image(fx.photo((70, 35)), "JPEG", jpeg_quality=85)
    saved = save_result(data, "JPEG", tmp_path)
    assert re.fullmatch(r"image_editor/[0-9a-f]{32}\.jpg", saved.path)
    path = tmp_path / saved.path
    assert path.read_bytes() == data == base64.b64decode(saved.image_b64)
    assert saved.size_bytes == len(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with Image.open(path) as written:
        assert written.size == (70, 35)
    assert os.listdir(tmp_path / "image_editor") == [path.name]  # no temporary file left
    other = save_result(encode_image(fx.photo((10, 10), "RGBA"), "PNG", jpeg_quality=85), "PNG", tmp_path)
    assert other.path.endswith(".png") and other.path != saved.path


def test_an_unwritable_media_root_is_a_save_failure_not_bad_input(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where MEDIA_ROOT should be")
    with pytest.raises(StageFailed) as caught:
        save_result(b"data", "JPEG", blocker)
    assert (caught.value.code, caught.value.stage) == ("save_failed", "save")
    assert not isinstance(caught.value, ValueError)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / "cat.jpg").write_bytes(fx.jpeg((40, 30)))
    (tmp_path / "secret.jpg").write_bytes(fx.jpeg((20, 20)))
    (tmp_path / "outside").mkdir()
    return root


def test_a_file_inside_media_root_is_read(media):
    assert read_media_file(media, "uploads/cat.jpg", max_bytes=10**6) == (media / "uploads/cat.jpg").read_bytes()
    assert read_media_file(media, Path("uploads") / "cat.jpg", max_bytes=10**6)
    os.symlink(media / "uploads" / "cat.jpg", media / "alias.jpg")  # a symlink that stays inside is fine
    assert resolve_media_path(media, "alias.jpg") == (media / "uploads" / "cat.jpg").resolve()


@pytest.mark.parametrize(
    "relative",
    ["/etc/passwd", "../secret.jpg", "uploads/../../secret.jpg", "", "uploads/cat.jpg\x00.png", "..", None],
)
def test_paths_leaving_media_root_are_refused_lexically(media, relative):
    with pytest.raises(InvalidImage) as caught:
        read_media_file(media, relative, max_bytes=10**6)
    assert caught.value.code == "path_outside_media_root"


def test_symlinks_that_escape_media_root_are_refused(media, tmp_path):
    os.symlink(tmp_path / "secret.jpg", media / "uploads" / "link.jpg")  # final component
    os.symlink(tmp_path / "outside", media / "escape")  # a directory on the way
    (tmp_path / "outside" / "x.jpg").write_bytes(fx.jpeg((8, 8)))
    os.symlink(media.resolve().parent, media / "up")
    for relative in ("uploads/link.jpg", "escape/x.jpg", "up/secret.jpg"):
        with pytest.raises(InvalidImage) as caught:
            read_media_file(media, relative, max_bytes=10**6)
        assert caught.value.code == "path_outside_media_root", relative


def test_a_symlinked_media_root_is_followed_once(tmp_path, media):
    os.symlink(media, tmp_path / "media-link")
    assert read_media_file(tmp_path / "media-link", "uploads/cat.jpg", max_bytes=10**6)


@pytest.mark.parametrize("kind", ["missing", "dangling", "directory", "fifo", "loop"])
def test_what_is_not_a_readable_file_is_not_found(media, tmp_path, kind):
    target = media / "uploads" / "thing"
    if kind == "dangling":
        os.symlink(tmp_path / "gone.jpg", target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)  # opening it without O_NONBLOCK would hang the worker
    elif kind == "loop":
        os.symlink(media / "uploads" / "thing2", target)
        os.symlink(target, media / "uploads" / "thing2")
    with pytest.raises(InvalidImage) as caught:
        read_media_file(media, "uploads/thing", max_bytes=10**6)
    assert caught.value.code == "not_found"


def test_a_media_file_over_the_byte_limit_is_not_read(media):
    size = (media / "uploads/cat.jpg").stat().st_size
    with pytest.raises(InvalidImage) as caught:
        read_media_file(media, "uploads/cat.jpg", max_bytes=size - 1)
    assert caught.value.code == "too_large"


def test_a_missing_media_root_is_not_found(tmp_path):
    with pytest.raises(InvalidImage) as caught:
        read_media_file(tmp_path / "nope", "a.jpg", max_bytes=10)
    assert caught.value.code == "not_found"
    assert "MEDIA_ROOT" in caught.value.message


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()
