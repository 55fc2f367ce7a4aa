"""The stand-in models: pure functions from (model, input, seed, input files) to output files.

Each stand-in produces real files of the requested size and format, deterministically for a given
version and input, so that a pipeline run against the sandbox exercises downloads and chaining:

- text-to-image (stable-diffusion, sdxl, flux-*-lora): a drawn 'product shot' (see ``imaging``);
  with an ``image`` input they behave like img2img, and sdxl with ``image`` + ``mask`` inpaints.
- img2img: blurs and tints the input image, more so for a higher ``prompt_strength``.
- inpainting: repaints the white area of the mask with a drawn scene.
- rembg: makes the pixels close to the corner colour transparent (RGBA PNG).
- object-removal: fills tall, narrow blobs ('person') and small side blobs (other classes) with the
  colour around them.
- stable-diffusion-animation: a list of optional PNG frames then the animation, a GIF; when ``mp4`` is
  asked for it is an animated **WebP** instead, because Pillow cannot write MP4.
- animate-diff: one animated **WebP** (the real model returns an MP4), 16 frames of 512x512.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFilter

from ..catalog import ModelSpec
from . import imaging
from .generic import is_generic

# lucataco/cog-flux-*-lora: ASPECT_RATIOS
FLUX_SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
# Inputs that name an image file, per model: the sandbox resolves these before a model runs.
FILE_INPUTS = ("image", "mask", "image_path")
ANIMATION_MODELS = ("andreasjansson/stable-diffusion-animation", "lucataco/animate-diff")


class ModelError(Exception):
    """The stand-in cannot run on this input; the prediction fails with this message."""


@dataclass(frozen=True)
class OutputFile:
    """One file a prediction produced."""

    name: str
    content: bytes
    media_type: str


@dataclass(frozen=True)
class Job:
    """Everything a stand-in needs: the model, its input with catalog defaults, a seed, input files."""

    model: ModelSpec
    params: Mapping[str, Any]
    seed: int
    files: Mapping[str, bytes]

    def image(self, name: str) -> Image.Image | None:
        """The decoded input image ``name``, or None when it was not given."""
        data = self.files.get(name)
        if data is None:
            return None
        try:
            return imaging.decode(data)
        except imaging.ImageDecodeError as exc:
            raise ModelError(f"input '{name}': {exc}") from exc

    def required_image(self, name: str) -> Image.Image:
        """The decoded input image ``name``; a ModelError when it is missing."""
        image = self.image(name)
        if image is None:
            raise ModelError(f"input '{name}' is required")
        return image

    def text(self, name: str) -> str:
        """A string parameter ('' when absent)."""
        value = self.params.get(name)
        return value if isinstance(value, str) else ""

    def number(self, name: str, default: float) -> float:
        """A numeric parameter, or ``default`` when absent or not a number."""
        value = self.params.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return default
        return float(value)


def with_defaults(model: ModelSpec, input: Mapping[str, Any]) -> dict[str, Any]:
    """``input`` on top of the catalog defaults."""
    params = {name: spec.default for name, spec in model.inputs.items() if spec.has_default}
    params.update(input)
    return params


def seed_for(model: ModelSpec, input: Mapping[str, Any]) -> int:
    """The input's ``seed`` if it is a positive int, else one derived from a hash of version and input."""
    seed = input.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed > 0:
        return seed
    canonical = json.dumps(dict(input), sort_keys=True, default=str)
    digest = hashlib.sha256(f"{model.version}\n{canonical}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31 or 1


def steps_for(model: ModelSpec, input: Mapping[str, Any]) -> int:
    """How many denoising steps the progress log shows."""
    params = with_defaults(model, input)
    for name in ("num_inference_steps", "steps"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 20


def counts_images(model: ModelSpec) -> bool:
    """Whether the model's metrics include ``image_count`` (image models, not video ones)."""
    return model.ref not in ANIMATION_MODELS


def predict(
    model: ModelSpec, input: Mapping[str, Any], *, seed: int, files: Mapping[str, bytes]
) -> list[OutputFile]:
    """Runs the stand-in for ``model``; raises ModelError when the input cannot work."""
    runner = _generate if is_generic(model) else _RUNNERS.get(model.name, _generate)
    return runner(Job(model=model, params=with_defaults(model, input), seed=seed, files=files))


def _count(job: Job) -> int:
    return max(1, int(job.number("num_outputs", 1)))


def _save(images: list[Image.Image], fmt: str, *, quality: int = 80) -> list[OutputFile]:
    media_type = imaging.MEDIA_TYPES[fmt]
    return [
        OutputFile(f"out-{i}.{fmt}", imaging.encode(image, fmt, quality=quality), media_type)
        for i, image in enumerate(images)
    ]


def _size(job: Job) -> tuple[int, int]:
    if "aspect_ratio" in job.params:
        ratio = job.text("aspect_ratio")
        if ratio not in FLUX_SIZES:
            raise ModelError(f"input 'aspect_ratio': unknown ratio {ratio!r}")
        return FLUX_SIZES[ratio]
    width, height = int(job.number("width", 512)), int(job.number("height", 512))
    if not (0 < width <= 4096 and 0 < height <= 4096):
        raise ModelError(f"width and height must be between 1 and 4096, got {width}x{height}")
    return width, height


def _generate(job: Job) -> list[OutputFile]:
    """Text-to-image; with ``image`` (sdxl, flux) image-to-image; with ``mask`` too, inpainting."""
    base = job.image("image")
    prompt = job.text("prompt")
    images = []
    for i in range(_count(job)):
        seed = job.seed + i
        if base is None:
            images.append(imaging.draw_scene(_size(job), prompt=prompt, seed=seed))
        elif job.files.get("mask") is not None:
            images.append(_inpaint(base, job.required_image("mask"), prompt=prompt, seed=seed))
        else:
            images.append(_transform(base, prompt=prompt, strength=job.number("prompt_strength", 0.8)))
    fmt = job.text("output_format") or "png"
    if fmt not in ("png", "jpg", "webp"):
        raise ModelError(f"input 'output_format': unsupported format {fmt!r}")
    return _save(images, fmt, quality=int(job.number("output_quality", 80)))


def _transform(image: Image.Image, *, prompt: str, strength: float) -> Image.Image:
    """Blurs ``image`` and tints it towards the prompt's colour, both by ``strength`` (0..1)."""
    strength = min(max(strength, 0.0), 1.0)
    blurred = image.filter(ImageFilter.GaussianBlur(radius=strength * 3))
    tint = Image.new("RGB", image.size, imaging.text_colour(prompt, lightness=(20, 170)))
    return Image.blend(blurred, tint, strength * 0.35)


def _inpaint(image: Image.Image, mask: Image.Image, *, prompt: str, seed: int) -> Image.Image:
    """``image`` with the white area of ``mask`` repainted by a drawn scene."""
    region = mask.convert("L").resize(image.size).point([0] * 128 + [255] * 128)
    painted = imaging.draw_scene(image.size, prompt=prompt, seed=seed, caption=False)
    return Image.composite(painted, image, region)


def _img2img(job: Job) -> list[OutputFile]:
    image = job.required_image("image")
    strength = job.number("prompt_strength", 0.8)
    images = [_transform(image, prompt=job.text("prompt"), strength=strength) for _ in range(_count(job))]
    return _save(images, "png")


def _inpainting(job: Job) -> list[OutputFile]:
    size = _size(job)
    image = job.required_image("image").resize(size)
    mask = job.required_image("mask")
    prompt = job.text("prompt")
    return _save([_inpaint(image, mask, prompt=prompt, seed=job.seed + i) for i in range(_count(job))], "png")


def _rembg(job: Job) -> list[OutputFile]:
    image = job.required_image("image")
    alpha = imaging.foreground_mask(image, imaging.background_colour(image))
    cutout = image.convert("RGBA")
    cutout.putalpha(alpha.filter(ImageFilter.MedianFilter(3)))
    return [OutputFile("out.png", imaging.encode(cutout, "png"), "image/png")]


def _object_removal(job: Job) -> list[OutputFile]:
    image = job.required_image("image_path")
    wanted = {name.strip() for name in job.text("objects_to_remove").split(",") if name.strip()}
    mask = imaging.foreground_mask(image, imaging.background_colour(image))
    for blob in _doomed(imaging.find_blobs(mask), wanted):
        region = imaging.blob_mask([blob], image.size)
        fill = Image.new("RGB", image.size, imaging.surrounding_colour(image, region))
        image = Image.composite(fill, image, region)
    return [OutputFile("out.png", imaging.encode(image, "png"), "image/png")]


def _blob_class(blob: imaging.Blob, *, largest: bool) -> str:
    """'person' for a tall, narrow blob; 'subject' for the largest other one; else 'other'."""
    if blob.height >= 1.5 * blob.width:
        return "person"
    return "subject" if largest else "other"


def _doomed(blobs: list[imaging.Blob], wanted: set[str]) -> list[imaging.Blob]:
    """The blobs to remove: 'person' blobs if asked, 'other' blobs if any other class is asked."""
    others = bool(wanted - {"person", "Background"})
    doomed = []
    for i, blob in enumerate(blobs):
        kind = _blob_class(blob, largest=i == 0)
        if (kind == "person" and "person" in wanted) or (kind == "other" and others):
            doomed.append(blob)
    return doomed


def _frames(job: Job, count: int, size: tuple[int, int]) -> list[Image.Image]:
    """``count`` frames morphing from the start prompt's scene to the end prompt's."""
    start = job.text("prompt_start") or job.text("prompt")
    end = (job.text("prompt_end") or start).split("|")[-1]
    first = imaging.draw_scene(size, prompt=start, seed=job.seed, caption=False)
    last = imaging.draw_scene(size, prompt=end, seed=job.seed + 1, caption=False)
    return [Image.blend(first, last, i / max(1, count - 1)) for i in range(count)]


def _animation(job: Job) -> list[OutputFile]:
    frames = _frames(job, int(job.number("num_animation_frames", 10)), _size(job))
    fmt = "gif" if job.text("output_format") in ("", "gif") else "webp"
    outputs = []
    if job.params.get("intermediate_output") is True:
        outputs = [
            OutputFile(f"frame-{i:03d}.png", imaging.encode(frame, "png"), "image/png")
            for i, frame in enumerate(frames)
        ]
    if job.params.get("gif_ping_pong") is True:
        frames = frames + frames[-2:0:-1]
    fps = int(job.number("gif_frames_per_second", 20))
    content = imaging.encode_animation(frames, fmt, fps=fps)
    return [*outputs, OutputFile(f"out.{fmt}", content, imaging.MEDIA_TYPES[fmt])]


def _animate_diff(job: Job) -> list[OutputFile]:
    content = imaging.encode_animation(_frames(job, 16, (512, 512)), "webp", fps=8)
    return [OutputFile("out.webp", content, "image/webp")]


_RUNNERS: dict[str, Callable[[Job], list[OutputFile]]] = {
    "stable-diffusion-img2img": _img2img,
    "stable-diffusion-inpainting": _inpainting,
    "rembg": _rembg,
    "object-removal": _object_removal,
    "stable-diffusion-animation": _animation,
    "animate-diff": _animate_diff,
}
