"""Real images made with Pillow, and a real local model service, for the image pipeline tests.

Nothing here is a mock: every image is encoded by Pillow's own writers, and the
model service is an aiohttp app listening on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import struct
import threading
import zlib
from collections import Counter
from typing import Any

from aiohttp import web
from PIL import Image, ImageCms, ImageOps

from testkit.receiver import BackgroundServer

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """``image`` encoded by Pillow as ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A photo-like image: smooth gradients plus grain, so encoders have real work."""
    horizontal = Image.linear_gradient("L").rotate(90).resize(size)
    vertical = Image.linear_gradient("L").resize(size)
    grain = Image.effect_noise(size, 24)
    image = Image.merge("RGB", (horizontal, vertical, grain))
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(size))
    elif mode != "RGB":
        image = image.convert(mode)
    return image


def halves(size: tuple[int, int], left: tuple[int, ...] = RED, right: tuple[int, ...] = BLUE) -> Image.Image:
    """Left half one colour, right half another (orientation is visible in the pixels)."""
    mode = "RGBA" if len(left) == 4 else "RGB"
    image = Image.new(mode, size, right)
    image.paste(Image.new(mode, (size[0] // 2, size[1]), left), (0, 0))
    return image


def jpeg(size: tuple[int, int] = (640, 480), *, orientation: int | None = None, **options: Any) -> bytes:
    """A JPEG photo, optionally with an EXIF orientation tag."""
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    return encode(photo(size), "JPEG", **{"quality": 90, **options})


def png_rgba(size: tuple[int, int] = (640, 480)) -> bytes:
    """A PNG with a graded alpha channel."""
    return encode(photo(size, "RGBA"), "PNG")


def webp(size: tuple[int, int] = (640, 480), *, alpha: bool = False) -> bytes:
    """A WebP photo, with alpha if asked."""
    return encode(photo(size, "RGBA" if alpha else "RGB"), "WEBP", quality=80)


def palette_png(size: tuple[int, int] = (400, 300), *, transparent: bool = False) -> bytes:
    """A palette (P mode) PNG; index 0 transparent if asked."""
    image = photo(size).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(image, "PNG", **({"transparency": 0} if transparent else {}))


def cmyk_jpeg(size: tuple[int, int] = (400, 300), *, icc_profile: bytes | None = None) -> bytes:
    """A CMYK JPEG (as print workflows make them)."""
    options = {"icc_profile": icc_profile} if icc_profile else {}
    return encode(photo(size).convert("CMYK"), "JPEG", quality=90, **options)


def srgb_profile() -> bytes:
    """The bytes of an sRGB ICC profile made by LittleCMS."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gif(size: tuple[int, int] = (200, 100), frames: int = 1) -> bytes:
    """A GIF with ``frames`` frames (animated when more than one)."""
    images = [halves(size, left=RED if n % 2 == 0 else BLUE, right=BLUE if n % 2 == 0 else RED) for n in range(frames)]
    return encode(images[0], "GIF", save_all=frames > 1, append_images=images[1:], duration=100, loop=0)


def animated(fmt: str, size: tuple[int, int] = (200, 100), frames: int = 3) -> bytes:
    """An animated WebP or PNG (APNG)."""
    images = [Image.new("RGB", size, (40 * n, 100, 200 - 40 * n)) for n in range(frames)]
    return encode(images[0], fmt, save_all=True, append_images=images[1:], duration=100, loop=0)


def mpo(size: tuple[int, int] = (320, 240)) -> bytes:
    """A multi-picture JPEG (MPO): a primary picture plus a smaller second one, as phones write them."""
    second = photo((size[0] // 2, size[1] // 2))
    return encode(halves(size), "MPO", save_all=True, append_images=[second])


def sixteen_bit_png(size: tuple[int, int] = (64, 32), value: int = 32768) -> bytes:
    """A 16-bit greyscale PNG filled with ``value``, white (65535) in the top-left pixel."""
    image = Image.new("I;16", size, value)
    image.putpixel((0, 0), 65535)
    return encode(image, "PNG")


def png_claiming(width: int, height: int) -> bytes:
    """A small real PNG whose IHDR claims ``width`` x ``height`` (CRC fixed), so only the header lies."""
    data = bytearray(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    """The first ``keep`` of ``data``: a download cut off."""
    return data[: int(len(data) * keep)]


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The channel values at ``xy`` as a tuple, whatever the mode."""
    value = image.getpixel(xy)
    assert isinstance(value, (tuple, int)), value
    return value if isinstance(value, tuple) else (value,)


def inverted(image: Image.Image) -> Image.Image:
    """The colour negative (alpha kept)."""
    if image.mode == "RGBA":
        rgb = ImageOps.invert(image.convert("RGB"))
        rgb.putalpha(image.getchannel("A"))
        return rgb
    return ImageOps.invert(image.convert("RGB"))


class ModelServer:
    """A real model service on 127.0.0.1, served by aiohttp in a daemon thread.

    =====================  ========================================================
    ``/invert``            200, the negative of the posted image, as PNG
    ``/invert-jpeg``       200, the negative as JPEG
    ``/cutout``            200, PNG RGBA: the posted image with its left half transparent
    ``/flaky/<n>``         500 for the first ``n`` requests to that path, then ``/invert``
    ``/status/<code>``     answers ``<code>``
    ``/hang``              never answers
    ``/garbage``           200 with bytes that are no image
    ``/animated``          200 with an animated PNG
    ``/big``               200 with ``big_bytes`` bytes (content-length set)
    ``/big-stream``        200, chunked, no content-length, bytes until the client leaves
    ``/gzip``              200, the negative, gzip-encoded
    ``/redirect``          302 to ``/invert``
    =====================  ========================================================
    """

    def __init__(self, big_bytes: int = 3 * 1024 * 1024) -> None:
        self.big_bytes = big_bytes
        self.requests: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.port = 0
        self._server: BackgroundServer | None = None

    def url(self, path: str) -> str:
        """The full URL of ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        """Requests received on ``path`` so far."""
        with self._lock:
            return self.counts[path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.requests.append(
                {"path": request.path, "content_type": request.content_type, "headers": dict(request.headers)}
            )
            self.counts[request.path] += 1
            seen = self.counts[request.path]
        head, _, arg = request.path.strip("/").partition("/")
        if head == "flaky":
            if seen <= int(arg):
                return web.Response(status=500, text="warming up")
            head = "invert"
        if head == "status":
            return web.Response(status=int(arg), text=f"status {arg}")
        if head == "hang":
            await asyncio.sleep(3600)
        if head == "garbage":
            return web.Response(body=b"this is not an image" * 10, content_type="image/png")
        if head == "animated":
            return web.Response(body=animated("PNG"), content_type="image/png")
        if head == "big":
            return web.Response(body=b"\x89PNG" + b"\x00" * self.big_bytes, content_type="image/png")
        if head == "big-stream":
            return await self._stream(request)
        if head == "redirect":
            raise web.HTTPFound("/invert")
        source = Image.open(io.BytesIO(body))
        source.load()
        if head == "cutout":
            result = source.convert("RGBA")
            result.paste((0, 0, 0, 0), (0, 0, result.width // 2, result.height))
            return web.Response(body=encode(result, "PNG"), content_type="image/png")
        result = inverted(source)
        if head == "invert-jpeg":
            return web.Response(body=encode(result.convert("RGB"), "JPEG", quality=95), content_type="image/jpeg")
        if head == "gzip":
            response = web.Response(body=gzip.compress(encode(result, "PNG")), content_type="image/png")
            response.headers["content-encoding"] = "gzip"
            return response
        return web.Response(body=encode(result, "PNG"), content_type="image/png")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"\x89PNG" + b"\x00" * (64 * 1024)
        try:
            for _ in range(4096):  # 256 MiB at most, in case the client keeps reading
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    def start(self) -> ModelServer:
        """Serve in a daemon thread; returns once listening."""
        self._server = BackgroundServer(self.app, "model-server")
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None:
            self._server.stop()
