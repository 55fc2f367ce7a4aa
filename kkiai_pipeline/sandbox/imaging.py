"""Pillow helpers for the stand-in models: drawing a scene, finding its background and blobs, encoding.

Everything here is pure and deterministic (no clock, no global random state) and cheap: scenes are
flat shapes, so a 1024x1024 PNG draws and encodes in a few tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageStat

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

MEDIA_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}
_PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF"}

# Blob analysis runs on a copy whose long side is at most this many pixels.
_ANALYSIS_SIDE = 128


class ImageDecodeError(ValueError):
    """Bytes that Pillow cannot read as an image."""


def text_colour(text: str, *, lightness: tuple[int, int]) -> RGB:
    """A colour derived from ``text``, each channel within ``lightness`` (low, high)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    low, high = lightness
    return (
        low + digest[0] % (high - low),
        low + digest[1] % (high - low),
        low + digest[2] % (high - low),
    )


def draw_scene(size: tuple[int, int], *, prompt: str, seed: int, caption: bool = True) -> Image.Image:
    """A 'product shot': a light plain background, a product in the middle, a person at one side.

    The background colour and the layout come from ``seed``; the product's colour from ``prompt``.
    """
    width, height = size
    rng = random.Random(seed)
    background = (rng.randint(205, 250), rng.randint(205, 250), rng.randint(205, 250))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    _draw_product(draw, size, colour=text_colour(prompt, lightness=(20, 170)), rng=rng)
    _draw_person(draw, size, left=rng.random() < 0.5, rng=rng)
    if caption and prompt and min(width, height) >= 128:
        font = ImageFont.load_default(size=max(10, height // 40))
        draw.text((width // 50 + 2, height // 50 + 2), prompt[:60], fill=(90, 90, 90), font=font)
    return image


def _draw_product(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], *, colour: RGB, rng: random.Random
) -> None:
    """A wide-ish rounded box or ellipse around the centre, never taller than 1.2x its width."""
    width, height = size
    side = min(width, height)
    box_w = int(side * rng.uniform(0.30, 0.42))
    box_h = int(box_w * rng.uniform(0.7, 1.2))
    cx = width // 2 + int(width * rng.uniform(-0.04, 0.04))
    cy = height // 2 + int(height * rng.uniform(-0.04, 0.04))
    box = (cx - box_w // 2, cy - box_h // 2, cx + box_w // 2, cy + box_h // 2)
    if rng.random() < 0.5:
        draw.rounded_rectangle(box, radius=max(1, box_w // 8), fill=colour)
    else:
        draw.ellipse(box, fill=colour)


def _draw_person(draw: ImageDraw.ImageDraw, size: tuple[int, int], *, left: bool, rng: random.Random) -> None:
    """A tall, narrow stick-figure silhouette (head, body, legs) near one side edge."""
    width, height = size
    colour = (rng.randint(30, 70), rng.randint(30, 70), rng.randint(50, 90))
    fig_h = int(height * 0.42)
    fig_w = max(3, int(min(width * 0.10, fig_h * 0.35)))
    cx = int(width * (0.13 if left else 0.87))
    top = int(height * 0.5) - fig_h // 2
    head = max(2, fig_w // 2)
    draw.ellipse((cx - head // 2 - 1, top, cx + head // 2 + 1, top + head + 2), fill=colour)
    body_top = top + head
    legs_top = body_top + int(fig_h * 0.45)
    draw.rectangle((cx - fig_w // 2, body_top, cx + fig_w // 2, legs_top), fill=colour)
    leg = max(1, fig_w // 3)
    draw.rectangle((cx - fig_w // 2, legs_top, cx - fig_w // 2 + leg, top + fig_h), fill=colour)
    draw.rectangle((cx + fig_w // 2 - leg, legs_top, cx + fig_w // 2, top + fig_h), fill=colour)


def decode(data: bytes) -> Image.Image:
    """The first frame of an image file as RGB; raises ImageDecodeError for anything else."""
    try:
        opened: Image.Image = Image.open(io.BytesIO(data))
        with opened:
            opened.load()
            if opened.mode in ("RGBA", "LA", "P", "PA"):
                rgba = opened.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return flat
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot read the image ({exc})") from exc


def encode(image: Image.Image, fmt: str, *, quality: int = 80) -> bytes:
    """``image`` encoded as ``fmt`` (png, jpg or webp)."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    elif fmt == "jpg":
        image.convert("RGB").save(buffer, format="JPEG", quality=max(1, min(quality, 95)))
    else:
        image.save(buffer, format=_PIL_FORMATS[fmt], quality=max(1, min(quality, 100)), method=0)
    return buffer.getvalue()


def encode_animation(frames: Sequence[Image.Image], fmt: str, *, fps: int) -> bytes:
    """An endlessly looping animated GIF or WebP of ``frames``."""
    buffer = io.BytesIO()
    duration = max(20, round(1000 / max(1, fps)))
    extra = {"method": 0, "quality": 80} if fmt == "webp" else {}
    frames[0].save(
        buffer,
        format=_PIL_FORMATS[fmt],
        save_all=True,
        append_images=list(frames[1:]),
        duration=duration,
        loop=0,
        **extra,
    )
    return buffer.getvalue()


def background_colour(image: Image.Image) -> RGB:
    """The median colour of the four corner patches (robust to one corner holding an object)."""
    width, height = image.size
    patch = max(1, min(width, height) // 20)
    corners = [
        (0, 0, patch, patch),
        (width - patch, 0, width, patch),
        (0, height - patch, patch, height),
        (width - patch, height - patch, width, height),
    ]
    medians = [ImageStat.Stat(image.crop(box)).median for box in corners]
    return (
        sorted(m[0] for m in medians)[1],
        sorted(m[1] for m in medians)[1],
        sorted(m[2] for m in medians)[1],
    )


def foreground_mask(image: Image.Image, background: RGB, *, threshold: int = 40) -> Image.Image:
    """An L mask, 255 where ``image`` differs from ``background`` by more than ``threshold``."""
    difference = ImageChops.difference(image, Image.new("RGB", image.size, background))
    red, green, blue = difference.split()
    largest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return largest.point([0] * (threshold + 1) + [255] * (255 - threshold))


@dataclass(frozen=True)
class Blob:
    """A connected foreground region, in the coordinates of the analysis copy."""

    pixels: tuple[int, ...]
    box: Box

    @property
    def width(self) -> int:
        """Width of the bounding box."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        """Height of the bounding box."""
        return self.box[3] - self.box[1]


def analysis_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size of the small copy blobs are found on."""
    width, height = size
    scale = min(1.0, _ANALYSIS_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def find_blobs(mask: Image.Image, *, min_fraction: float = 0.004) -> list[Blob]:
    """The 4-connected regions of ``mask`` (analysed small), largest first; specks are dropped."""
    small = mask.resize(analysis_size(mask.size), Image.Resampling.NEAREST)
    width, height = small.size
    data = bytearray(small.tobytes())
    blobs = []
    for start in range(len(data)):
        if data[start]:
            blobs.append(_flood(data, start, width, height))
    minimum = max(1, int(width * height * min_fraction))
    return sorted((b for b in blobs if len(b.pixels) >= minimum), key=lambda b: -len(b.pixels))


def _flood(data: bytearray, start: int, width: int, height: int) -> Blob:
    """Clears one region from ``data`` and returns it."""
    data[start] = 0
    stack, pixels = [start], []
    while stack:
        index = stack.pop()
        pixels.append(index)
        x, y = index % width, index // width
        for nx, ny in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)):
            if 0 <= nx < width and 0 <= ny < height and data[ny * width + nx]:
                data[ny * width + nx] = 0
                stack.append(ny * width + nx)
    xs = [p % width for p in pixels]
    ys = [p // width for p in pixels]
    return Blob(tuple(pixels), (min(xs), min(ys), max(xs) + 1, max(ys) + 1))


def blob_mask(blobs: Sequence[Blob], size: tuple[int, int]) -> Image.Image:
    """A full-size L mask covering ``blobs`` (found on an image of ``size``), slightly dilated."""
    small_size = analysis_size(size)
    data = bytearray(small_size[0] * small_size[1])
    for blob in blobs:
        for index in blob.pixels:
            data[index] = 255
    small = Image.frombytes("L", small_size, bytes(data)).filter(ImageFilter.MaxFilter(3))
    return small.resize(size, Image.Resampling.NEAREST)


def surrounding_colour(image: Image.Image, region: Image.Image) -> RGB:
    """The median colour of the pixels just around ``region`` (an L mask over ``image``)."""
    ring = ImageChops.subtract(region.filter(ImageFilter.MaxFilter(5)), region)
    if ring.getbbox() is None:
        ring = ImageChops.invert(region)
    if ring.getbbox() is None:
        return background_colour(image)
    median = ImageStat.Stat(image, ring).median
    return (median[0], median[1], median[2])
