"""Tests for kkiai_pipeline.validation: one or more per rule, exact problems."""

from __future__ import annotations

from typing import Any

import pytest

from kkiai_pipeline.catalog import InputSpec, ModelSpec, default_catalog
from kkiai_pipeline.validation import (
    FieldProblem,
    bounds,
    multiple_of,
    omit_unset,
    required_inputs,
    to_invalid_fields,
    validate_input,
)

SD = "stability-ai/stable-diffusion"
SDXL = "stability-ai/sdxl"
INPAINTING = "stability-ai/stable-diffusion-inpainting"
IMG2IMG = "stability-ai/stable-diffusion-img2img"
SCHNELL = "lucataco/flux-schnell-lora"
DEV = "lucataco/flux-dev-lora"
ANIMATION = "andreasjansson/stable-diffusion-animation"
ANIMATE_DIFF = "lucataco/animate-diff"
OBJECTS = "sujaykhandekar/object-removal"
REMBG = "cjwbw/rembg"

URL = "https://example.com/cat.png"
SDXL_INPUTS = (
    "prompt, negative_prompt, image, mask, width, height, num_outputs, scheduler, num_inference_steps, "
    "guidance_scale, prompt_strength, seed, refine, high_noise_frac, refine_steps, apply_watermark, "
    "lora_scale, replicate_weights, disable_safety_checker"
)
CLASSES = (
    "Background, Aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, dining table, dog, "
    "horse, motorbike, person, potted plant, sheep, sofa, train, tv/monitor"
)
ITEMS_RULE = "names are comma-separated without spaces and case-sensitive"

#: The smallest valid input of every model: its required inputs filled.
MINIMAL: dict[str, dict[str, Any]] = {
    SD: {"prompt": "a cat"},
    SDXL: {"prompt": "a cat"},
    INPAINTING: {"prompt": "a cat", "image": URL, "mask": URL},
    IMG2IMG: {"prompt": "a cat", "image": URL},
    SCHNELL: {"prompt": "a cat"},
    DEV: {"prompt": "a cat"},
    ANIMATION: {"prompt_start": "a cat", "prompt_end": "a dog"},
    ANIMATE_DIFF: {"prompt": "a cat"},
    OBJECTS: {"image_path": URL},
    REMBG: {"image": URL},
}


def model(ref: str) -> ModelSpec:
    return default_catalog().resolve(ref)


def check(ref: str, values: dict[str, Any], **kwargs: Any) -> list[FieldProblem]:
    return validate_input(model(ref), values, **kwargs)


def problems_of(ref: str, **values: Any) -> list[FieldProblem]:
    """The problems of the minimal valid input of ``ref`` with ``values`` added."""
    return check(ref, MINIMAL[ref] | values)


def one(ref: str, **values: Any) -> FieldProblem:
    found = problems_of(ref, **values)
    assert len(found) == 1, found
    return found[0]


# --- valid inputs ---------------------------------------------------------------------------------


def test_minimal_covers_the_whole_catalog() -> None:
    assert sorted(MINIMAL) == sorted(default_catalog().refs)


@pytest.mark.parametrize("ref", sorted(MINIMAL))
def test_required_inputs_alone_are_valid(ref: str) -> None:
    assert check(ref, MINIMAL[ref]) == []


@pytest.mark.parametrize("ref", sorted(MINIMAL))
def test_every_schema_default_is_valid(ref: str) -> None:
    spec = model(ref)
    defaults = {n: i.default for n, i in spec.inputs.items() if i.has_default}
    assert check(ref, defaults | MINIMAL[ref]) == []


def test_a_full_sdxl_input_is_valid() -> None:
    values = {
        "prompt": "a cat",
        "negative_prompt": "",
        "image": URL,
        "mask": "data:image/png;base64,iVBORw0KGgo=",
        "width": 1152,
        "height": 896,
        "num_outputs": 4,
        "scheduler": "KarrasDPM",
        "guidance_scale": 7,
        "prompt_strength": 1,
        "seed": 42,
        "refine": "expert_ensemble_refiner",
        "apply_watermark": False,
        "replicate_weights": "https://replicate.delivery/weights.tar",
    }
    assert check(SDXL, values) == []


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_key_has_a_did_you_mean_and_the_accepted_inputs() -> None:
    assert check(SDXL, {"prompt": "a cat", "promt": "a cat"}) == [
        FieldProblem(
            "promt",
            "unknown",
            f"unknown input 'promt'; did you mean 'prompt'? (stability-ai/sdxl accepts: {SDXL_INPUTS})",
        )
    ]


def test_unknown_key_without_a_close_match() -> None:
    problem = one(SDXL, foo=1)
    assert problem.message == f"unknown input 'foo' (stability-ai/sdxl accepts: {SDXL_INPUTS})"


def test_img2img_strength_suggests_prompt_strength() -> None:
    problem = one(IMG2IMG, strength=0.5)
    assert (problem.field, problem.kind) == ("strength", "unknown")
    assert problem.message.startswith("unknown input 'strength'; did you mean 'prompt_strength'? (")


def test_flux_schnell_has_no_guidance_scale() -> None:
    problem = one(SCHNELL, guidance_scale=3.5)
    assert (problem.field, problem.kind) == ("guidance_scale", "unknown")
    assert problem.message.startswith(
        "unknown input 'guidance_scale'; flux-schnell has no guidance scale (it is fixed at 0) "
        "(lucataco/flux-schnell-lora accepts: prompt, aspect_ratio, "
    )
    assert problems_of(DEV, guidance_scale=3.5) == []


def test_img2img_has_no_width() -> None:
    assert one(IMG2IMG, width=512).message.startswith(
        "unknown input 'width'; the output size follows the input image ("
    )


# --- types ----------------------------------------------------------------------------------------


def test_bool_is_not_a_number() -> None:
    assert one(SDXL, guidance_scale=True) == FieldProblem(
        "guidance_scale", "type", "guidance_scale must be a number, got true (a boolean)"
    )


def test_bool_is_not_an_integer() -> None:
    assert one(SDXL, num_outputs=False).message == "num_outputs must be an integer, got false (a boolean)"


def test_int_is_a_number() -> None:
    assert problems_of(SDXL, guidance_scale=7, prompt_strength=0) == []


def test_integral_float_is_not_an_integer() -> None:
    assert one(SDXL, num_outputs=2.0) == FieldProblem(
        "num_outputs",
        "type",
        "num_outputs must be an integer, got 2.0 (a float); write 2 without the decimal point",
    )


def test_fractional_float_is_not_an_integer() -> None:
    assert one(ANIMATE_DIFF, steps=9.5).message == "steps must be an integer, got 9.5 (a float)"


def test_numeric_string_is_not_an_integer() -> None:
    assert one(SDXL, width="768").message == "width must be an integer, got the string '768'"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_not_numbers(value: float) -> None:
    problem = one(SDXL, guidance_scale=value)
    assert problem.kind == "type"
    assert problem.message.endswith("(a float); NaN and infinity are not allowed")


def test_number_is_not_a_string() -> None:
    assert one(SDXL, negative_prompt=123) == FieldProblem(
        "negative_prompt", "type", "negative_prompt must be a string, got 123 (an integer); quote it in YAML"
    )


def test_unquoted_yaml_aspect_ratio_is_explained() -> None:
    assert one(SCHNELL, aspect_ratio=969) == FieldProblem(
        "aspect_ratio",
        "type",
        "aspect_ratio must be a string, got 969 (an integer); "
        "YAML reads an unquoted 16:9 as the number 969, so quote it: '16:9'",
    )


def test_boolean_needs_true_or_false() -> None:
    assert (
        one(SDXL, apply_watermark="yes").message
        == "apply_watermark must be true or false, got the string 'yes'"
    )
    assert one(SDXL, apply_watermark=1).message == "apply_watermark must be true or false, got 1 (an integer)"


def test_list_is_not_a_string() -> None:
    assert one(SDXL, negative_prompt=["a"]).message == "negative_prompt must be a string, got a list"


# --- None and blank -------------------------------------------------------------------------------


def test_none_means_not_set_for_an_optional_input() -> None:
    assert problems_of(SDXL, seed=None, width=None, image=None) == []


def test_none_is_a_required_problem_for_a_required_input() -> None:
    assert check(SCHNELL, {"prompt": None}) == [
        FieldProblem("prompt", "required", "prompt is required by lucataco/flux-schnell-lora but is null")
    ]


def test_blank_required_string_is_a_required_problem() -> None:
    assert check(DEV, {"prompt": "  "}) == [
        FieldProblem("prompt", "required", "prompt is required by lucataco/flux-dev-lora but is empty")
    ]


def test_empty_optional_text_is_fine() -> None:
    assert problems_of(SD, negative_prompt="") == []


def test_omit_unset_drops_none_values() -> None:
    assert omit_unset({"prompt": "a", "seed": None, "width": 0}) == {"prompt": "a", "width": 0}


# --- ranges ---------------------------------------------------------------------------------------


def test_above_maximum() -> None:
    assert one(SD, guidance_scale=25) == FieldProblem(
        "guidance_scale", "range", "guidance_scale must be between 1 and 20 (inclusive), got 25"
    )


def test_below_minimum() -> None:
    assert one(SD, num_outputs=0).message == "num_outputs must be between 1 and 4 (inclusive), got 0"


def test_bounds_are_inclusive() -> None:
    assert problems_of(SD, guidance_scale=1, num_inference_steps=500) == []
    assert problems_of(SD, guidance_scale=20.0, num_outputs=4) == []


def test_one_sided_bounds() -> None:
    inputs = {
        "low": InputSpec(name="low", type="number", minimum=0),
        "high": InputSpec(name="high", type="integer", maximum=5),
    }
    toy = ModelSpec(owner="me", name="toy", version="0" * 64, inputs=inputs, output_kind="single")
    assert validate_input(toy, {"low": -0.5, "high": 6}) == [
        FieldProblem("low", "range", "low must be at least 0, got -0.5"),
        FieldProblem("high", "range", "high must be at most 5, got 6"),
    ]


def test_img2img_prompt_strength_is_clamped_to_0_1() -> None:
    assert one(IMG2IMG, prompt_strength=1.5) == FieldProblem(
        "prompt_strength", "range", "prompt_strength must be between 0 and 1 (inclusive), got 1.5"
    )
    assert one(IMG2IMG, prompt_strength=-0.1).kind == "range"
    assert problems_of(IMG2IMG, prompt_strength=0) == problems_of(IMG2IMG, prompt_strength=1.0) == []


def test_animation_prompt_strength_is_clamped_to_0_1() -> None:
    assert one(ANIMATION, prompt_strength=2).message == (
        "prompt_strength must be between 0 and 1 (inclusive), got 2"
    )
    assert problems_of(ANIMATION, prompt_strength=0.5) == []


def test_animate_diff_seed_bounds() -> None:
    assert one(ANIMATE_DIFF, seed=-1).message == "seed must be between 0 and 2147483647 (inclusive), got -1"
    assert problems_of(ANIMATE_DIFF, seed=2147483647) == []


# --- choices --------------------------------------------------------------------------------------


def test_scheduler_choice_with_did_you_mean() -> None:
    assert one(SDXL, scheduler="k_euler") == FieldProblem(
        "scheduler",
        "choice",
        "scheduler must be one of DDIM, DPMSolverMultistep, HeunDiscrete, KarrasDPM, K_EULER_ANCESTRAL, "
        "K_EULER, PNDM; got 'k_euler'; did you mean 'K_EULER'?",
    )


def test_numeric_choice_suggests_the_nearest() -> None:
    assert one(SD, width=1000).message == (
        "width must be one of 64, 128, 192, 256, 320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960, "
        "1024; got 1000; did you mean 1024?"
    )


def test_animation_height_choices_stop_at_768() -> None:
    assert one(ANIMATION, height=1024).message == (
        "height must be one of 128, 256, 512, 768; got 1024; did you mean 768?"
    )
    assert problems_of(ANIMATION, width=1024, height=768) == []


def test_aspect_ratio_suggests_the_nearest_shape() -> None:
    assert one(SCHNELL, aspect_ratio="16:10").message.endswith("got '16:10'; did you mean '3:2'?")
    assert problems_of(SCHNELL, aspect_ratio="3:4") == problems_of(DEV, aspect_ratio="4:3") == []


def test_output_format_is_case_sensitive() -> None:
    problem = one(DEV, output_format="PNG")
    assert (problem.kind, problem.message) == (
        "choice",
        "output_format must be one of webp, jpg, png; got 'PNG'; did you mean 'png'?",
    )


def test_choice_without_a_close_match() -> None:
    assert one(ANIMATE_DIFF, motion_module="zzz").message == (
        "motion_module must be one of mm_sd_v14, mm_sd_v15, mm_sd_v15_v2; got 'zzz'"
    )


# --- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [URL, "http://127.0.0.1:8000/a.png", "HTTPS://EXAMPLE.COM/A.PNG", "data:image/png;base64,AAAA"]
)
def test_file_accepts_urls_and_data_uris(value: str) -> None:
    assert check(REMBG, {"image": value}) == []


@pytest.mark.parametrize("value", ["./cat.png", "/tmp/cat.png", "ftp://example.com/a.png", "https://", "cat"])
def test_file_rejects_paths_and_other_schemes(value: str) -> None:
    assert check(REMBG, {"image": value}) == [
        FieldProblem(
            "image", "format", f"image must be an http:// or https:// URL or a data: URI, got '{value}'"
        )
    ]


def test_file_must_be_a_string() -> None:
    assert check(REMBG, {"image": 3}) == [
        FieldProblem("image", "type", "image must be a string, got 3 (an integer)")
    ]


def test_long_values_are_cut_in_messages() -> None:
    problem = check(REMBG, {"image": "file:///" + "a" * 5000})[0]
    assert (
        problem.message
        == f"image must be an http:// or https:// URL or a data: URI, got 'file:///{'a' * 47}...'"
    )


def test_empty_required_file_is_a_required_problem() -> None:
    assert check(REMBG, {"image": ""}) == [
        FieldProblem("image", "required", "image is required by cjwbw/rembg but is empty")
    ]


def test_empty_optional_file_is_a_format_problem() -> None:
    assert one(SDXL, image="").message == "image must be an http:// or https:// URL or a data: URI, got ''"


# --- required -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        (REMBG, "image"),
        (OBJECTS, "image_path"),
        (INPAINTING, "image"),
        (INPAINTING, "mask"),
        (IMG2IMG, "image"),
        (SCHNELL, "prompt"),
        (DEV, "prompt"),
        (ANIMATION, "prompt_start"),
        (ANIMATION, "prompt_end"),
        (SD, "prompt"),
    ],
)
def test_missing_required_input(ref: str, name: str) -> None:
    values = {k: v for k, v in MINIMAL[ref].items() if k != name}
    assert check(ref, values) == [
        FieldProblem(name, "required", f"{name} is required by {ref} but is missing")
    ]


def test_required_inputs_include_the_extra_prompt_rule() -> None:
    assert required_inputs(model(INPAINTING)) == ["prompt", "image", "mask"]
    assert required_inputs(model(SCHNELL)) == ["prompt"]
    assert required_inputs(model(OBJECTS)) == ["image_path"]


# --- pending templates and order ------------------------------------------------------------------


def test_pending_fields_count_as_present_and_are_not_checked() -> None:
    values = {"prompt": "{{ steps.a.output }}", "image": "{{ steps.b.output[0] }}", "mask": 12}
    assert check(INPAINTING, values, pending={"prompt", "image", "mask"}) == []


def test_pending_name_without_a_value_counts_as_present() -> None:
    assert check(REMBG, {}, pending=["image"]) == []


def test_pending_unknown_key_is_still_unknown() -> None:
    problems = check(REMBG, {"image": URL, "img": "{{ x }}"}, pending=["img"])
    assert [(p.field, p.kind) for p in problems] == [("img", "unknown")]


def test_problems_follow_key_order_then_missing_required() -> None:
    values = {"num_outputs": 9, "promt": "x", "prompt_strength": 2, "scheduler": "nope"}
    problems = check(IMG2IMG, values)
    assert [(p.field, p.kind) for p in problems] == [
        ("num_outputs", "range"),
        ("promt", "unknown"),
        ("prompt_strength", "range"),
        ("scheduler", "choice"),
        ("prompt", "required"),
        ("image", "required"),
    ]


# --- model-specific rules -------------------------------------------------------------------------


def test_stable_diffusion_rejects_more_than_1024x768() -> None:
    assert problems_of(SD, width=1024, height=1024) == [
        FieldProblem(
            "height",
            "range",
            "width x height = 1024x1024 (1048576 pixels) is more than stability-ai/stable-diffusion allows: "
            "at most 786432 pixels, e.g. 1024x768 or 768x1024",
        )
    ]


def test_stable_diffusion_area_is_reported_at_the_last_of_width_and_height() -> None:
    problems = check(SD, {"height": 896, "prompt": "a", "width": 960})
    assert [(p.field, p.kind) for p in problems] == [("width", "range")]


def test_stable_diffusion_allows_1024x768_both_ways() -> None:
    assert problems_of(SD, width=1024, height=768) == problems_of(SD, width=768, height=1024) == []
    assert problems_of(SD, width=1024) == []  # height defaults to 768


def test_stable_diffusion_area_skips_pending_sizes() -> None:
    values = {"prompt": "a", "width": 1024, "height": "{{ x }}"}
    assert check(SD, values, pending={"height"}) == []


def test_sdxl_size_must_be_a_multiple_of_8() -> None:
    assert one(SDXL, width=1001) == FieldProblem(
        "width", "range", "width must be a multiple of 8, got 1001; try 1000 or 1008"
    )
    assert one(SDXL, height=1535).message == "height must be a multiple of 8, got 1535; try 1528 or 1536"


def test_sdxl_size_bounds() -> None:
    assert one(SDXL, width=2048).message == "width must be between 128 and 1536 (inclusive), got 2048"
    assert one(SDXL, height=120).message == "height must be between 128 and 1536 (inclusive), got 120"
    assert problems_of(SDXL, width=128, height=1536) == []


def test_sdxl_mask_needs_image() -> None:
    assert one(SDXL, mask=URL) == FieldProblem(
        "mask", "required", "mask is used only together with image; add an image or drop the mask"
    )
    assert problems_of(SDXL, mask=URL, image=URL) == []
    assert check(SDXL, {"prompt": "a", "mask": URL, "image": "{{ x }}"}, pending={"image"}) == []


def test_sdxl_replicate_weights_is_a_url_or_blank() -> None:
    assert problems_of(SDXL, replicate_weights="") == []
    assert one(SDXL, replicate_weights="weights.tar").message == (
        "replicate_weights must be an http:// or https:// URL of a LoRA weights tar, got 'weights.tar'"
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "alvdansen/frosting_lane_flux",
        "https://huggingface.co/a/b/resolve/main/lora.safetensors",
        "https://civitai.com/api/download/models/735262?type=Model&format=SafeTensor",
    ],
)
def test_hf_lora_accepts_repos_and_urls(value: str) -> None:
    assert problems_of(DEV, hf_lora=value) == problems_of(SCHNELL, hf_lora=value) == []


@pytest.mark.parametrize("value", ["frosting_lane", "a/b/c", "owner/ name"])
def test_hf_lora_rejects_other_strings(value: str) -> None:
    assert one(SCHNELL, hf_lora=value) == FieldProblem(
        "hf_lora",
        "format",
        f"hf_lora must be a Hugging Face repo (owner/name) or an http(s) URL, got '{value}'",
    )


# --- object-removal items -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["person", "person,car", "dining table,tv/monitor", "Background"])
def test_objects_to_remove_accepts_known_classes(value: str) -> None:
    assert problems_of(OBJECTS, objects_to_remove=value) == []


def test_objects_to_remove_rejects_spaces_after_commas() -> None:
    assert problems_of(OBJECTS, objects_to_remove="person, car") == [
        FieldProblem(
            "objects_to_remove",
            "items",
            f"objects_to_remove item ' car' has a space; {ITEMS_RULE}: write 'car'",
        )
    ]


def test_objects_to_remove_is_case_sensitive() -> None:
    assert problems_of(OBJECTS, objects_to_remove="Person") == [
        FieldProblem(
            "objects_to_remove",
            "items",
            f"objects_to_remove item 'Person' is not a known class; did you mean 'person'? ({ITEMS_RULE})",
        )
    ]


def test_objects_to_remove_reports_every_bad_item() -> None:
    problems = problems_of(OBJECTS, objects_to_remove="airplane,person,tv,xyz")
    assert [p.message for p in problems] == [
        f"objects_to_remove item 'airplane' is not a known class; did you mean 'Aeroplane'? ({ITEMS_RULE})",
        f"objects_to_remove item 'tv' is not a known class; did you mean 'tv/monitor'? ({ITEMS_RULE})",
        f"objects_to_remove item 'xyz' is not a known class; allowed: {CLASSES} ({ITEMS_RULE})",
    ]


def test_objects_to_remove_empty_is_an_error() -> None:
    assert problems_of(OBJECTS, objects_to_remove="") == [
        FieldProblem(
            "objects_to_remove", "items", f"objects_to_remove is empty; name at least one of: {CLASSES}"
        )
    ]


def test_objects_to_remove_empty_item() -> None:
    assert problems_of(OBJECTS, objects_to_remove="person,,car") == [
        FieldProblem(
            "objects_to_remove",
            "items",
            f"objects_to_remove has an empty item in 'person,,car'; {ITEMS_RULE}",
        )
    ]


# --- the helpers and the 422 shape ----------------------------------------------------------------


def test_bounds_and_multiple_of() -> None:
    assert bounds(model(SDXL), "width") == (128, 1536)
    assert bounds(model(SDXL), "guidance_scale") == (1, 50)
    assert bounds(model(IMG2IMG), "prompt_strength") == (0, 1)
    assert bounds(model(SD), "prompt") == (None, None)
    assert multiple_of(model(SDXL), "height") == 8
    assert multiple_of(model(SD), "height") is None


def test_to_invalid_fields() -> None:
    problems = [
        FieldProblem("prompt", "required", "prompt is required"),
        FieldProblem("input", "type", "the input must be a mapping"),
    ]
    assert to_invalid_fields(problems) == [
        {"type": "required", "field": "input.prompt", "description": "prompt is required"},
        {"type": "type", "field": "input", "description": "the input must be a mapping"},
    ]


def test_input_that_is_not_a_mapping() -> None:
    assert validate_input(model(REMBG), ["image"]) == [  # type: ignore[arg-type]
        FieldProblem("input", "type", "the input must be a mapping of names to values, got a list")
    ]
