"""The stage pipeline end to end: real images in, files under MEDIA_ROOT out, a real local model service.

No mocks: images are made by Pillow, the model stage talks HTTP to an aiohttp
app on 127.0.0.1, and MEDIA_ROOT is ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import image_fixtures as fx
import pytest
from conftest import free_port
from PIL import Image

from worker.errors import SettingsError
from worker.images import (
    DEFAULT_REGISTRY,
    ImageConfig,
    ImageError,
    ImageLimits,
    InvalidImage,
    ModelConfig,
    StageContext,
    StageFailed,
    StageRegistry,
    check_config,
    run_pipeline,
)


@pytest.fixture
def config(tmp_path) -> ImageConfig:
    return ImageConfig(media_root=tmp_path)


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return fx.jpeg((4000, 3000), quality=85)


@pytest.fixture
def model() -> Iterator[fx.ModelServer]:
    server = fx.ModelServer(big_bytes=3 * 1024 * 1024).start()
    yield server
    server.stop()


def model_config(config: ImageConfig, url: str, **changes) -> ImageConfig:
    settings = {"timeout": 5.0, "retries": 2, "backoff": 0.01, **changes}
    return replace(config, model=ModelConfig(url=url, **settings))


def opened(config: ImageConfig, result) -> Image.Image:
    data = (config.media_root / result.path).read_bytes()
    assert base64.b64decode(result.image_b64) == data
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.format, image.size) == (result.format, (result.width, result.height))
    return image


def failure(source, config, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as caught:
        run_pipeline(source, config, **kwargs)
    return caught.value


def saved_files(config: ImageConfig) -> list[str]:
    directory = config.media_root / "image_editor"
    return sorted(os.listdir(directory)) if directory.exists() else []


# -- the built-in offline stages --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1000, 500), (700, 350)), ((500, 1000), (350, 700)), ((351, 2000), (350, 1994)), ((350, 350), (350, 350))],
)
def test_resize_keeps_the_aspect_ratio_with_the_shorter_side_at_350(config, size, expected):
    result = run_pipeline(fx.jpeg(size), config, task_id="t-1")
    assert (result.width, result.height) == expected
    assert result.format == "JPEG"
    assert opened(config, result).mode == "RGB"


def test_a_smaller_image_is_never_upscaled(config):
    result = run_pipeline(fx.jpeg((200, 120)), config)
    assert (result.width, result.height) == (200, 120)


def test_a_large_photo_decodes_reduced_and_still_comes_out_exactly_sized(config, big_jpeg):
    result = run_pipeline(big_jpeg, config)
    assert (result.width, result.height) == (467, 350)
    full = run_pipeline(big_jpeg, config, stages=["validate", "grayscale", "resize", "format"])
    assert (full.width, full.height) == (467, 350)  # no reduced decode there: same size either way


def test_an_exif_rotated_photo_is_saved_upright(config):
    result = run_pipeline(fx.jpeg((1000, 500), orientation=6), config)
    assert (result.width, result.height) == (350, 700)
    rotated_big = run_pipeline(fx.jpeg((2000, 1000), orientation=8, quality=80), config)
    assert (rotated_big.width, rotated_big.height) == (350, 700)


def test_png_stays_png_with_its_alpha(config):
    result = run_pipeline(fx.png_rgba((1000, 500)), config)
    assert result.format == "PNG" and result.path.endswith(".png")
    image = opened(config, result)
    assert image.mode == "RGBA"
    assert (result.width, result.height) == (700, 350)
    assert fx.pixel(image, (5, 2))[3] < 20  # the graded alpha survived: transparent at the top


@pytest.mark.parametrize(
    ("data", "fmt", "mode"),
    [
        (fx.webp((800, 400), alpha=True), "JPEG", "RGB"),
        (fx.cmyk_jpeg((800, 400)), "JPEG", "RGB"),
        (fx.palette_png((800, 400)), "PNG", "RGB"),
        (fx.palette_png((800, 400), transparent=True), "PNG", "RGBA"),
        (fx.encode(fx.photo((800, 400), "L"), "JPEG"), "JPEG", "RGB"),
        (fx.sixteen_bit_png((800, 400)), "PNG", "L"),
    ],
    ids=["webp-alpha", "cmyk", "palette", "palette-transparent", "grey-jpeg", "16-bit-png"],
)
def test_results_are_rgb_jpeg_unless_the_input_was_png(config, data, fmt, mode):
    result = run_pipeline(data, config)
    image = opened(config, result)
    assert (result.format, image.mode) == (fmt, mode)
    assert (result.width, result.height) == (700, 350)


def test_transparent_webp_becomes_a_jpeg_on_white(config):
    image = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    result = run_pipeline(fx.encode(image, "WEBP", lossless=True), config)
    assert fx.pixel(opened(config, result), (175, 175)) == (255, 255, 255)


def test_a_non_animated_gif_is_accepted_when_allowed(config):
    allowed = replace(config, limits=ImageLimits(formats=("JPEG", "PNG", "WEBP", "GIF")))
    result = run_pipeline(fx.gif((700, 400)), allowed)
    assert (result.format, result.width, result.height) == ("JPEG", 613, 350)  # 612.5 rounds half up
    assert failure(fx.gif((700, 400), frames=2), allowed).code == "animated"


def test_grayscale_keeps_alpha(config):
    result = run_pipeline(fx.png_rgba((800, 400)), config, stages=["grayscale", "resize", "format"])
    assert opened(config, result).mode == "LA"


def test_concurrent_tasks_in_threads_do_not_affect_each_other(config):
    # Limits are passed explicitly, never set on Pillow globally: a refused bomb in one thread
    # must not change what another thread accepts.
    cases = [
        (fx.jpeg((1000, 500)), (700, 350)),
        (fx.png_claiming(100_000, 100_000), "decompression_bomb"),
        (fx.truncated(fx.jpeg((600, 400))), "truncated"),
        (fx.png_rgba((500, 1000)), (350, 700)),
    ] * 6

    def run(case):
        data, expected = case
        try:
            result = run_pipeline(data, config)
        except ImageError as e:
            return e.code == expected
        return (result.width, result.height) == expected

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(run, cases))
    assert len(saved_files(config)) == 12


def test_timings_are_recorded_per_step_in_order(config):
    result = run_pipeline(fx.jpeg(), config)
    assert list(result.timings) == ["decode", "validate", "resize", "format", "save"]
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert result.stages == ("validate", "resize", "format")


def test_the_result_path_is_relative_to_media_root_and_unique(config):
    first, second = run_pipeline(fx.jpeg(), config), run_pipeline(fx.jpeg(), config)
    assert first.path != second.path
    assert first.path.startswith("image_editor/") and not os.path.isabs(first.path)
    assert saved_files(config) == sorted([Path(first.path).name, Path(second.path).name])
    assert first.size_bytes == (config.media_root / first.path).stat().st_size


def test_an_image_path_under_media_root_is_a_source(config):
    (config.media_root / "uploads").mkdir()
    (config.media_root / "uploads" / "dog.png").write_bytes(fx.png_rgba((900, 600)))
    result = run_pipeline("uploads/dog.png", config)
    assert (result.format, result.width, result.height) == ("PNG", 525, 350)


def test_an_image_path_leaving_media_root_fails_in_decode_with_timings(config, tmp_path):
    error = failure("../../etc/passwd", config)
    assert (error.code, error.stage) == ("path_outside_media_root", "decode")
    assert list(error.timings) == ["decode"]
    assert saved_files(config) == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"definitely not an image", "corrupt"),
        (fx.truncated(fx.jpeg((600, 400))), "truncated"),
        (fx.png_claiming(100_000, 100_000), "decompression_bomb"),
        (fx.animated("WEBP"), "animated"),
        (fx.gif(), "unsupported_format"),
    ],
)
def test_bad_input_fails_in_decode_and_saves_nothing(config, data, code):
    error = failure(data, config)
    assert isinstance(error, InvalidImage)
    assert (error.code, error.stage) == (code, "decode")
    assert error.as_payload()["code"] == code
    assert saved_files(config) == []


# -- stage lists and params -------------------------------------------------------------------------


def test_a_task_can_choose_its_stages(config):
    kept = run_pipeline(fx.jpeg((1000, 500)), config, stages=["validate", "format"])
    assert (kept.width, kept.height) == (1000, 500)
    grey = run_pipeline(fx.jpeg((1000, 500)), config, stages="validate, grayscale, resize")
    assert list(grey.timings) == ["decode", "validate", "grayscale", "resize", "save"]
    assert opened(config, grey).mode == "RGB"  # saving still makes a JPEG RGB without a format stage
    assert (grey.width, grey.height) == (700, 350)


def test_configured_stages_come_from_the_config(config):
    result = run_pipeline(fx.jpeg((1000, 500)), replace(config, stages=("validate",)))
    assert (result.width, result.height, result.stages) == (1000, 500, ("validate",))


def test_an_unknown_stage_fails_before_any_work_and_lists_the_known_ones(config, model):
    configured = model_config(config, model.url("/invert"))
    error = failure("no/such/file.jpg", configured, stages=["model", "sharpen", "format"])
    assert (error.code, error.stage) == ("unknown_stage", "sharpen")
    assert "format, grayscale, model, resize, validate" in error.message
    assert isinstance(error, ValueError)
    assert model.count("/invert") == 0  # the model stage before it never ran
    assert saved_files(config) == []


@pytest.mark.parametrize(
    ("stages", "params", "stage", "fragment"),
    [
        ([], None, None, "stages is empty"),
        (["resize", "resize"], None, "resize", "listed twice"),
        ([1, 2], None, None, "list of stage names"),
        (None, {"short_side": 0}, "resize", "params.short_side must be an integer 16..8192"),
        (None, {"short_side": "350"}, "resize", "params.short_side"),
        (None, {"short_side": True}, "resize", "params.short_side"),
        (None, {"jpeg_quality": 101}, "save", "params.jpeg_quality"),
        (None, ["not", "a", "mapping"], None, "params must be an object"),
        (["model"], {"model_url": "file:///etc/passwd"}, "model", "absolute http(s) URL"),
    ],
)
def test_bad_stage_lists_and_params_fail_before_any_work(config, stages, params, stage, fragment):
    error = failure("no/such/file.jpg", config, stages=stages, params=params)  # a read would say not_found
    assert (error.code, error.stage) == ("invalid_params", stage)
    assert fragment in error.message


def test_params_override_the_size_and_the_quality(config):
    small = run_pipeline(fx.jpeg((1000, 500)), config, params={"short_side": 100})
    assert (small.width, small.height) == (200, 100)
    low = run_pipeline(fx.jpeg((1000, 500)), config, params={"jpeg_quality": 20})
    high = run_pipeline(fx.jpeg((1000, 500)), config, params={"jpeg_quality": 95})
    assert low.size_bytes < high.size_bytes


# -- plug-in stages ---------------------------------------------------------------------------------


def test_a_plug_in_stage_gets_a_working_image_and_the_context(config):
    seen: dict[str, object] = {}

    def stamp(image: Image.Image, context: StageContext) -> Image.Image:
        seen.update(mode=image.mode, task=context.task_id, params=dict(context.params), fmt=context.image_format)
        stamped = image.copy()
        stamped.paste((0, 255, 0), (0, 0, 10, 10))
        return stamped.convert("CMYK")  # the pipeline brings it back to a working mode

    registry = DEFAULT_REGISTRY.copy()
    registry.register("stamp", stamp)
    result = run_pipeline(
        fx.palette_png((800, 400)),
        config,
        stages=["stamp", "resize"],
        params={"x": 1},
        task_id="t-9",
        registry=registry,
    )
    assert seen == {"mode": "RGB", "task": "t-9", "params": {"x": 1}, "fmt": "PNG"}
    assert result.format == "PNG"
    assert "stamp" not in DEFAULT_REGISTRY.names()


def test_a_stage_that_raises_fails_the_task_with_its_name_and_stage_failed(config):
    def explode(image, context):
        raise KeyError("boom")

    def nothing(image, context):
        return None

    def refuse(image, context):
        raise InvalidImage("invalid_params", "the face detector needs a face")

    registry = DEFAULT_REGISTRY.copy()
    for name, run in (("explode", explode), ("nothing", nothing), ("refuse", refuse)):
        registry.register(name, run)
    error = failure(fx.jpeg(), config, stages=["validate", "explode", "format"], registry=registry)
    assert (error.code, error.stage) == ("stage_failed", "explode")
    assert "KeyError" in error.message
    assert list(error.timings) == ["decode", "validate", "explode"]
    assert isinstance(error.__cause__, KeyError)
    error = failure(fx.jpeg(), config, stages=["nothing"], registry=registry)
    assert (error.code, error.stage) == ("stage_failed", "nothing")
    assert "NoneType" in error.message
    error = failure(fx.jpeg(), config, stages=["refuse"], registry=registry)
    assert (error.code, error.stage) == ("invalid_params", "refuse")
    assert saved_files(config) == []


def test_a_stage_params_check_runs_before_any_work(config):
    calls = []
    registry = StageRegistry()

    def check(params, cfg):
        calls.append("check")
        if "angle" not in params:
            raise InvalidImage("invalid_params", "params.angle is required")  # the pipeline names the stage

    registry.register("rotate", lambda image, context: image.rotate(context.params["angle"], expand=True), check=check)
    error = failure("missing.jpg", config, stages=["rotate"], registry=registry)
    assert (error.code, error.stage) == ("invalid_params", "rotate")
    result = run_pipeline(fx.jpeg((100, 50)), config, stages=["rotate"], params={"angle": 90}, registry=registry)
    assert (result.width, result.height) == (50, 100)
    assert calls == ["check", "check"]


@pytest.mark.parametrize("name", ["Resize", "decode", "save", "", "a" * 33, "with-dash"])
def test_stage_names_are_checked_when_registering(name):
    with pytest.raises(ValueError):
        StageRegistry().register(name, lambda image, context: image)


def test_a_stage_name_is_registered_once():
    registry = DEFAULT_REGISTRY.copy()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("resize", lambda image, context: image)


def test_check_config_refuses_unknown_stages_and_a_model_without_a_url(config):
    check_config(config)
    with pytest.raises(SettingsError, match="no stage 'blur'"):
        check_config(replace(config, stages=("validate", "blur")))
    with pytest.raises(SettingsError, match="IMAGE_MODEL_URL"):
        check_config(replace(config, stages=("validate", "model", "format")))
    check_config(model_config(replace(config, stages=("model",)), "http://127.0.0.1:9/x"))


def test_the_pipeline_refuses_to_run_on_an_event_loop_thread(config):
    async def main() -> None:
        run_pipeline(fx.jpeg(), config)

    with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
        asyncio.run(main())


# -- the model stage, against a real local service --------------------------------------------------

MODEL_STAGES = ["validate", "model", "resize", "format"]


def test_the_model_stage_takes_the_image_the_service_answers(config, model):
    configured = model_config(config, model.url("/invert"))
    source = fx.halves((800, 400))
    result = run_pipeline(fx.encode(source, "JPEG", quality=95), configured, stages=MODEL_STAGES, task_id="t-42")
    image = opened(configured, result)
    left, right = fx.pixel(image, (50, 175)), fx.pixel(image, (650, 175))
    assert left[0] < 70 and left[1] > 200  # red (220, 20, 20) inverted is about (35, 235, 235)
    assert right[2] < 70 and right[0] > 200
    (request,) = model.requests
    assert request["content_type"] == "image/jpeg"
    assert request["headers"]["x-task-id"] == "t-42"
    assert result.format == "PNG"  # the service answered a PNG
    assert result.timings["model"] >= 0


def test_an_image_with_alpha_is_sent_as_png(config, model):
    configured = model_config(config, model.url("/invert-jpeg"))
    result = run_pipeline(fx.png_rgba((600, 400)), configured, stages=MODEL_STAGES)
    assert model.requests[0]["content_type"] == "image/png"
    assert result.format == "JPEG"


def test_a_background_remover_answer_keeps_its_alpha(config, model):
    configured = model_config(config, model.url("/cutout"))
    result = run_pipeline(fx.jpeg((800, 400)), configured, stages=MODEL_STAGES)
    image = opened(configured, result)
    assert (result.format, image.mode) == ("PNG", "RGBA")
    assert fx.pixel(image, (10, 10))[3] == 0 and fx.pixel(image, (690, 10))[3] == 255


def test_server_errors_are_retried_until_the_service_recovers(config, model):
    configured = model_config(config, model.url("/flaky/2"), retries=2)
    result = run_pipeline(fx.jpeg(), configured, stages=MODEL_STAGES)
    assert model.count("/flaky/2") == 3
    assert result.format == "PNG"


def test_a_service_that_keeps_failing_fails_the_task_after_the_retries(config, model):
    configured = model_config(config, model.url("/status/503"), retries=2)
    error = failure(fx.jpeg(), configured, stages=MODEL_STAGES)
    assert (error.code, error.stage) == ("model_failed", "model")
    assert isinstance(error, StageFailed)
    assert "HTTP 503 after 3 attempts" in error.message
    assert model.count("/status/503") == 3
    assert list(error.timings) == ["decode", "validate", "model"]
    assert saved_files(config) == []


def test_too_few_retries_for_a_flaky_service(config, model):
    error = failure(fx.jpeg(), model_config(config, model.url("/flaky/2"), retries=1), stages=MODEL_STAGES)
    assert error.code == "model_failed"
    assert model.count("/flaky/2") == 2


@pytest.mark.parametrize(("path", "advice"), [("/status/400", "not retried"), ("/redirect", "redirects")])
def test_a_refusal_or_a_redirect_is_not_retried(config, model, path, advice):
    error = failure(fx.jpeg(), model_config(config, model.url(path)), stages=MODEL_STAGES)
    assert error.code == "model_failed"
    assert advice in error.message
    assert model.count(path) == 1
    assert model.count("/invert") == 0


def test_a_hanging_service_times_out(config, model):
    configured = model_config(config, model.url("/hang"), timeout=0.3, retries=1)
    error = failure(fx.jpeg(), configured, stages=MODEL_STAGES)
    assert (error.code, error.stage) == ("model_timeout", "model")
    assert "IMAGE_MODEL_TIMEOUT" in error.message
    assert model.count("/hang") == 2


def test_no_service_listening_is_a_model_failure(config):
    configured = model_config(config, f"http://127.0.0.1:{free_port()}/x", retries=1)
    error = failure(fx.jpeg(), configured, stages=MODEL_STAGES)
    assert error.code == "model_failed"
    assert "connect error" in error.message


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/garbage", "corrupt"),
        ("/animated", "animated"),
        ("/big", "declares"),
        ("/big-stream", "larger than"),
        ("/gzip", "gzip-encoded"),
    ],
)
def test_an_unusable_answer_is_a_bad_response_and_not_retried(config, model, path, fragment):
    configured = replace(model_config(config, model.url(path)), limits=ImageLimits(max_bytes=2 * 1024 * 1024))
    error = failure(fx.jpeg(), configured, stages=MODEL_STAGES)
    assert (error.code, error.stage) == ("model_bad_response", "model")
    assert fragment in error.message
    assert model.count(path) == 1


def test_a_task_may_pick_a_model_on_the_same_service_but_not_another_host(config, model):
    configured = model_config(config, model.url("/invert"))
    result = run_pipeline(fx.jpeg(), configured, stages=MODEL_STAGES, params={"model_url": model.url("/cutout")})
    assert result.format == "PNG" and model.count("/cutout") == 1
    error = failure(fx.jpeg(), configured, stages=MODEL_STAGES, params={"model_url": "http://169.254.169.254/latest"})
    assert (error.code, error.stage) == ("invalid_params", "model")
    assert "origin of IMAGE_MODEL_URL" in error.message
    assert "latest" not in error.message  # only scheme, host and port are ever shown


def test_url_prefixes_widen_what_a_task_may_call(config, model):
    configured = model_config(config, "", url_prefixes=(model.url("/cut"),))
    result = run_pipeline(fx.jpeg(), configured, stages=MODEL_STAGES, params={"model_url": model.url("/cutout")})
    assert result.format == "PNG"
    error = failure(fx.jpeg(), configured, stages=MODEL_STAGES, params={"model_url": model.url("/invert")})
    assert "IMAGE_MODEL_URL_PREFIXES" in error.message


def test_a_model_stage_without_a_url_fails_before_any_work(config):
    error = failure("missing.jpg", config, stages=MODEL_STAGES)
    assert (error.code, error.stage) == ("model_not_configured", "model")
