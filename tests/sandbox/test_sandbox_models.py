"""The stand-in models produce real, deterministic files of the requested size, format and mode."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image, ImageChops

from kkiai_pipeline.catalog import ModelSpec, default_catalog
from kkiai_pipeline.sandbox import imaging, models


def model(ref: str) -> ModelSpec:
    found = default_catalog().find(ref)
    assert found is not None
    return found


def run(ref: str, input: dict[str, Any], **files: bytes) -> list[models.OutputFile]:
    spec = model(ref)
    return models.predict(spec, input, seed=models.seed_for(spec, input), files=files)


def open_image(file: models.OutputFile) -> Image.Image:
    image = Image.open(io.BytesIO(file.content))
    image.load()
    return image


@pytest.mark.parametrize(
    ("ref", "input", "size", "fmt"),
    [
        ("stability-ai/stable-diffusion", {"prompt": "a shoe"}, (768, 768), "PNG"),
        (
            "stability-ai/stable-diffusion",
            {"prompt": "a shoe", "width": 512, "height": 256},
            (512, 256),
            "PNG",
        ),
        ("stability-ai/sdxl", {"prompt": "a shoe"}, (1024, 1024), "PNG"),
        ("stability-ai/sdxl", {"prompt": "a shoe", "width": 640, "height": 832}, (640, 832), "PNG"),
        ("lucataco/flux-schnell-lora", {"prompt": "a shoe"}, (1024, 1024), "WEBP"),
        ("lucataco/flux-schnell-lora", {"prompt": "a shoe", "aspect_ratio": "16:9"}, (1344, 768), "WEBP"),
        ("lucataco/flux-dev-lora", {"prompt": "a shoe", "output_format": "jpg"}, (1024, 1024), "JPEG"),
        (
            "lucataco/flux-dev-lora",
            {"prompt": "a", "aspect_ratio": "9:21", "output_format": "png"},
            (640, 1536),
            "PNG",
        ),
    ],
)
def test_text_to_image_size_and_format(
    ref: str, input: dict[str, Any], size: tuple[int, int], fmt: str
) -> None:
    [file] = run(ref, input)
    image = open_image(file)
    assert (image.size, image.format, image.mode) == (size, fmt, "RGB")
    assert file.media_type == Image.MIME[fmt]
    assert file.name == f"out-0.{ {'PNG': 'png', 'JPEG': 'jpg', 'WEBP': 'webp'}[fmt] }"


def test_num_outputs_gives_distinct_images() -> None:
    files = run(
        "stability-ai/stable-diffusion", {"prompt": "a", "width": 128, "height": 128, "num_outputs": 3}
    )
    assert [f.name for f in files] == ["out-0.png", "out-1.png", "out-2.png"]
    assert len({f.content for f in files}) == 3


def test_same_input_same_bytes_and_seed_changes_them() -> None:
    input = {"prompt": "a red car", "width": 256, "height": 256}
    first = run("stability-ai/stable-diffusion", input)[0].content
    again = run("stability-ai/stable-diffusion", input)[0].content
    other = run("stability-ai/stable-diffusion", {**input, "seed": 99})[0].content
    assert first == again
    assert first != other


def test_seed_is_taken_from_input_or_derived_from_it() -> None:
    sdxl = model("stability-ai/sdxl")
    assert models.seed_for(sdxl, {"seed": 1234}) == 1234
    derived = models.seed_for(sdxl, {"prompt": "x"})
    assert derived == models.seed_for(sdxl, {"prompt": "x"})
    assert derived != models.seed_for(sdxl, {"prompt": "y"})
    assert 0 < derived < 2**31


def test_img2img_transforms_the_input(scene_png: bytes) -> None:
    [file] = run("stability-ai/stable-diffusion-img2img", {"prompt": "winter", "image": "x"}, image=scene_png)
    image = open_image(file)
    original = Image.open(io.BytesIO(scene_png)).convert("RGB")
    assert (image.size, image.format) == (original.size, "PNG")
    assert ImageChops.difference(image, original).getbbox() is not None


def test_stronger_prompt_strength_changes_more(scene_png: bytes) -> None:
    original = Image.open(io.BytesIO(scene_png)).convert("RGB")

    def change(strength: float) -> float:
        input = {"prompt": "winter", "image": "x", "prompt_strength": strength}
        [file] = run("stability-ai/stable-diffusion-img2img", input, image=scene_png)
        diff = ImageChops.difference(open_image(file), original).convert("L")
        return sum(i * n for i, n in enumerate(diff.histogram()))

    assert change(0.2) < change(0.9)


def test_inpainting_repaints_only_the_white_area(scene_png: bytes) -> None:
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (0, 0, 128, 256))
    input = {"prompt": "a cat", "width": 256, "height": 256, "image": "x", "mask": "y"}
    [file] = run(
        "stability-ai/stable-diffusion-inpainting", input, image=scene_png, mask=imaging.encode(mask, "png")
    )
    image = open_image(file)
    original = Image.open(io.BytesIO(scene_png)).convert("RGB")
    assert (image.size, image.format) == ((256, 256), "PNG")
    assert (
        ImageChops.difference(image.crop((128, 0, 256, 256)), original.crop((128, 0, 256, 256))).getbbox()
        is None
    )
    assert (
        ImageChops.difference(image.crop((0, 0, 128, 256)), original.crop((0, 0, 128, 256))).getbbox()
        is not None
    )


def test_inpainting_resizes_to_the_requested_size(scene_png: bytes) -> None:
    mask = imaging.encode(Image.new("L", (256, 256), 255), "png")
    [file] = run(
        "stability-ai/stable-diffusion-inpainting", {"image": "x", "mask": "y"}, image=scene_png, mask=mask
    )
    assert open_image(file).size == (512, 512)


def test_rembg_makes_the_background_transparent(scene_png: bytes) -> None:
    [file] = run("cjwbw/rembg", {"image": "x"}, image=scene_png)
    image = open_image(file)
    assert (image.format, image.mode, image.size, file.name) == ("PNG", "RGBA", (256, 256), "out.png")
    alpha = image.getchannel("A")
    for corner in [(0, 0), (255, 0), (0, 255), (255, 255)]:
        assert alpha.getpixel(corner) == 0
    assert alpha.getpixel((128, 128)) == 255


def test_object_removal_fills_the_person_with_background(scene_png: bytes) -> None:
    original = Image.open(io.BytesIO(scene_png)).convert("RGB")
    background = imaging.background_colour(original)
    blobs = imaging.find_blobs(imaging.foreground_mask(original, background))
    assert len(blobs) >= 2
    input = {"image_path": "x", "objects_to_remove": "person"}
    [file] = run("sujaykhandekar/object-removal", input, image_path=scene_png)
    image = open_image(file).convert("RGB")
    assert (image.size, open_image(file).format, file.name) == ((256, 256), "PNG", "out.png")
    changed = ImageChops.difference(image, original).getbbox()
    assert changed is not None
    left, _, right, _ = changed
    assert right <= 96 or left >= 160  # only the side where the person stood
    assert image.getpixel((128, 128)) == original.getpixel((128, 128))  # the product stays
    remaining = imaging.find_blobs(imaging.foreground_mask(image, background))
    assert len(remaining) == len(blobs) - 1


def test_object_removal_leaves_an_image_without_matches_alone(scene_png: bytes) -> None:
    input = {"image_path": "x", "objects_to_remove": "Background"}
    [file] = run("sujaykhandekar/object-removal", input, image_path=scene_png)
    original = Image.open(io.BytesIO(scene_png)).convert("RGB")
    assert ImageChops.difference(open_image(file).convert("RGB"), original).getbbox() is None


def test_animation_is_a_gif_last() -> None:
    input = {"prompt_start": "a", "prompt_end": "b", "width": 128, "height": 128, "num_animation_frames": 4}
    files = run("andreasjansson/stable-diffusion-animation", input)
    assert [f.name for f in files] == ["out.gif"]
    image = open_image(files[0])
    assert (image.format, image.size, getattr(image, "n_frames", 1)) == ("GIF", (128, 128), 4)


def test_animation_intermediate_output_adds_png_frames() -> None:
    input = {"prompt_start": "a", "prompt_end": "b", "width": 128, "height": 128, "num_animation_frames": 3}
    files = run("andreasjansson/stable-diffusion-animation", {**input, "intermediate_output": True})
    assert [f.name for f in files] == ["frame-000.png", "frame-001.png", "frame-002.png", "out.gif"]
    assert {open_image(f).format for f in files[:-1]} == {"PNG"}


def test_animation_mp4_is_an_animated_webp() -> None:
    input = {"prompt_start": "a", "prompt_end": "b", "width": 128, "height": 128, "output_format": "mp4"}
    [file] = run("andreasjansson/stable-diffusion-animation", input)
    image = open_image(file)
    assert (file.name, file.media_type, image.format, getattr(image, "n_frames", 1)) == (
        "out.webp",
        "image/webp",
        "WEBP",
        10,
    )


def test_animate_diff_is_one_animated_file() -> None:
    [file] = run("lucataco/animate-diff", {"prompt": "a dancer"})
    image = open_image(file)
    assert (image.format, image.size, getattr(image, "n_frames", 1)) == ("WEBP", (512, 512), 16)


@pytest.mark.parametrize(
    ("ref", "input", "message"),
    [
        ("cjwbw/rembg", {}, "input 'image' is required"),
        ("stability-ai/stable-diffusion-inpainting", {"prompt": "a"}, "input 'image' is required"),
        ("lucataco/flux-dev-lora", {"prompt": "a", "aspect_ratio": "7:1"}, "unknown ratio '7:1'"),
    ],
)
def test_unusable_input_raises_model_error(ref: str, input: dict[str, Any], message: str) -> None:
    with pytest.raises(models.ModelError, match=message):
        run(ref, input)


def test_undecodable_image_raises_model_error() -> None:
    with pytest.raises(models.ModelError, match="input 'image': cannot read the image"):
        run("cjwbw/rembg", {"image": "x"}, image=b"not an image")


def test_sdxl_with_image_and_mask_inpaints(scene_png: bytes) -> None:
    mask = imaging.encode(Image.new("L", (256, 256), 0), "png")
    [file] = run("stability-ai/sdxl", {"prompt": "a", "image": "x", "mask": "y"}, image=scene_png, mask=mask)
    original = Image.open(io.BytesIO(scene_png)).convert("RGB")
    assert (
        ImageChops.difference(open_image(file).convert("RGB"), original).getbbox() is None
    )  # all black: kept
