"""Output files, input files, output shapes per model, and the version documents."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.sandbox import Sandbox

from .helpers import data_uri, version_of

Wait = Callable[[httpx.Client, str], dict[str, Any]]

SAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "stability-ai/stable-diffusion": {"prompt": "a lamp", "width": 64, "height": 64},
    "stability-ai/sdxl": {"prompt": "a lamp", "width": 128, "height": 128},
    "stability-ai/stable-diffusion-inpainting": {"prompt": "a", "image": "IMAGE", "mask": "IMAGE"},
    "stability-ai/stable-diffusion-img2img": {"prompt": "a", "image": "IMAGE"},
    "lucataco/flux-schnell-lora": {"prompt": "a lamp"},
    "lucataco/flux-dev-lora": {"prompt": "a lamp", "output_format": "png"},
    "andreasjansson/stable-diffusion-animation": {
        "prompt_start": "a",
        "prompt_end": "b",
        "width": 128,
        "height": 128,
    },
    "lucataco/animate-diff": {"prompt": "a lamp"},
    "sujaykhandekar/object-removal": {"image_path": "IMAGE", "objects_to_remove": "person"},
    "cjwbw/rembg": {"image": "IMAGE"},
}
OUTPUT_FORMATS = {
    "lucataco/flux-schnell-lora": "WEBP",
    "lucataco/flux-dev-lora": "PNG",
    "andreasjansson/stable-diffusion-animation": "GIF",
    "lucataco/animate-diff": "WEBP",
}


def create(client: httpx.Client, ref: str, input: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/predictions", json={"version": version_of(ref), "input": input}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def fetch_image(url: str) -> Image.Image:
    response = httpx.get(url, trust_env=False)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(response.content))
    image = Image.open(io.BytesIO(response.content))
    assert Image.MIME[image.format or ""] == response.headers["content-type"]
    return image


def test_every_model_is_covered() -> None:
    assert set(SAMPLE_INPUTS) == set(default_catalog().refs)


@pytest.mark.parametrize("ref", sorted(SAMPLE_INPUTS))
def test_each_model_returns_files_in_its_output_shape(
    api: httpx.Client, wait_done: Wait, scene_png: bytes, ref: str
) -> None:
    input = {k: data_uri(scene_png) if v == "IMAGE" else v for k, v in SAMPLE_INPUTS[ref].items()}
    body = wait_done(api, create(api, ref, input)["id"])
    assert body["status"] == "succeeded", body["error"]
    spec = default_catalog().find(ref)
    assert spec is not None
    if spec.output_kind == "list":
        assert isinstance(body["output"], list) and body["output"]
        urls = body["output"]
    else:
        assert isinstance(body["output"], str)
        urls = [body["output"]]
    image = fetch_image(urls[-1])
    assert image.format == OUTPUT_FORMATS.get(ref, "PNG")


def test_files_need_no_auth_and_unknown_files_are_404(api: httpx.Client, wait_done: Wait) -> None:
    body = wait_done(api, create(api, "stability-ai/sdxl", SAMPLE_INPUTS["stability-ai/sdxl"])["id"])
    url = body["output"][0]
    assert fetch_image(url).size == (128, 128)
    missing = httpx.get(url.replace("out-0", "out-9"), trust_env=False)
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not found.", "status": 404})


def test_no_files_before_success(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=60.0)
    with httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": "Bearer t"}, trust_env=False
    ) as client:
        prediction_id = create(client, "stability-ai/sdxl", SAMPLE_INPUTS["stability-ai/sdxl"])["id"]
    root = sandbox.base_url.removesuffix("/replicate/v1")
    assert httpx.get(f"{root}/files/{prediction_id}/out-0.png", trust_env=False).status_code == 404


def test_output_urls_follow_the_request_host(api: httpx.Client, wait_done: Wait) -> None:
    prediction_id = create(api, "stability-ai/sdxl", SAMPLE_INPUTS["stability-ai/sdxl"])["id"]
    wait_done(api, prediction_id)
    body = api.get(f"/predictions/{prediction_id}", headers={"Host": "sandbox.example:8443"}).json()
    assert body["output"] == [f"http://sandbox.example:8443/files/{prediction_id}/out-0.png"]


def test_a_sandbox_file_url_is_an_input_whatever_its_host(api: httpx.Client, wait_done: Wait) -> None:
    first = wait_done(
        api, create(api, "stability-ai/sdxl", {"prompt": "a lamp", "width": 256, "height": 256})["id"]
    )
    path = first["output"][0].split("/files/", 1)[1]
    image_url = f"https://delivery.example/some/prefix/files/{path}"
    second = wait_done(api, create(api, "cjwbw/rembg", {"image": image_url})["id"])
    assert second["status"] == "succeeded", second["error"]
    cutout = fetch_image(second["output"])
    assert (cutout.mode, cutout.size) == ("RGBA", (256, 256))
    assert cutout.getchannel("A").getpixel((0, 0)) == 0


def test_object_removal_changes_a_generated_image(api: httpx.Client, wait_done: Wait) -> None:
    first = wait_done(
        api, create(api, "stability-ai/sdxl", {"prompt": "a lamp", "width": 256, "height": 256})["id"]
    )
    removed = wait_done(
        api, create(api, "sujaykhandekar/object-removal", {"image_path": first["output"][0]})["id"]
    )
    before = fetch_image(first["output"][0]).convert("RGB")
    after = fetch_image(removed["output"]).convert("RGB")
    assert after.size == before.size
    assert list(after.getdata()) != list(before.getdata())


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            "https://example.com/cat.png",
            "E1000 Prediction failed (sandbox: input 'image' is 'https://example.com/cat.png': the sandbox "
            "does not fetch external URLs; pass a data: URI or the URL of one of this sandbox's output files "
            "(/files/...))",
        ),
        (
            "http://127.0.0.1:1/files/nosuchprediction/out.png",
            "E1000 Prediction failed (sandbox: input 'image' is 'http://127.0.0.1:1/files/nosuchprediction/"
            "out.png', which is not an output file of this sandbox)",
        ),
        (
            "data:image/png;base64,aGVsbG8=",
            "E1000 Prediction failed (sandbox: input 'image': cannot read the image",
        ),
    ],
)
def test_unusable_input_files_fail_the_prediction(
    api: httpx.Client, wait_done: Wait, image: str, message: str
) -> None:
    body = wait_done(api, create(api, "cjwbw/rembg", {"image": image})["id"])
    assert body["status"] == "failed"
    assert body["error"].startswith(message)


def test_version_document(api: httpx.Client) -> None:
    sdxl = version_of("stability-ai/sdxl")
    body = api.get(f"/models/stability-ai/sdxl/versions/{sdxl}").json()
    assert (body["id"], body["cog_version"]) == (sdxl, "0.9.4")
    assert body["created_at"].endswith("Z")
    schemas = body["openapi_schema"]["components"]["schemas"]
    props = schemas["Input"]["properties"]
    assert props["num_outputs"] == {
        "type": "integer",
        "title": "Num Outputs",
        "default": 1,
        "minimum": 1,
        "maximum": 4,
        "description": "Number of images to output",
        "x-order": props["num_outputs"]["x-order"],
    }
    assert props["image"]["format"] == "uri"
    assert props["scheduler"]["enum"][:2] == ["DDIM", "DPMSolverMultistep"]
    assert "required" not in schemas["Input"]
    assert schemas["Output"] == {
        "title": "Output",
        "type": "array",
        "items": {"type": "string", "format": "uri"},
    }


def test_version_documents_say_required_and_iterator(api: httpx.Client) -> None:
    ref = "andreasjansson/stable-diffusion-animation"
    schemas = api.get(f"/models/{ref}/versions/{version_of(ref)}").json()["openapi_schema"]["components"][
        "schemas"
    ]
    assert schemas["Input"]["required"] == ["prompt_start", "prompt_end"]
    assert schemas["Output"]["x-cog-array-type"] == "iterator"
    rembg = api.get(f"/models/cjwbw/rembg/versions/{version_of('cjwbw/rembg')}").json()["openapi_schema"]
    assert rembg["components"]["schemas"]["Output"] == {"title": "Output", "type": "string", "format": "uri"}


@pytest.mark.parametrize(
    "path",
    [
        "/models/stability-ai/sdxl/versions/" + "0" * 64,
        f"/models/stability-ai/stable-diffusion/versions/{version_of('stability-ai/sdxl')}",
    ],
)
def test_unknown_version_is_404(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert (response.status_code, response.json()) == (404, {"detail": "Not found.", "status": 404})


def test_a_model_it_does_not_know_is_a_generic_stand_in_with_a_schema(
    api: httpx.Client, wait_done: Wait
) -> None:
    ref = "someone/painter:0123abcd"
    body = api.get("/models/someone/painter/versions/0123abcd").json()
    assert body["id"] == "0123abcd"
    schemas = body["openapi_schema"]["components"]["schemas"]
    assert list(schemas["Input"]["properties"]) == ["prompt", "width", "height", "num_outputs", "seed"]
    assert (schemas["Input"]["required"], schemas["Input"]["properties"]["width"]["maximum"]) == (
        ["prompt"],
        2048,
    )
    input = {"prompt": "a cube", "width": 64, "height": 80, "num_outputs": 2}
    created = api.post("/predictions", json={"version": ref, "input": input})
    assert created.status_code == 201, created.text
    done = wait_done(api, created.json()["id"])
    assert (done["status"], done["model"], done["version"]) == ("succeeded", "someone/painter", "0123abcd")
    assert fetch_image(done["output"][1]).size == (64, 80)
    refused = api.post("/predictions", json={"version": ref, "input": {"prompt": "a", "width": 5}})
    assert refused.status_code == 422
    assert refused.json()["invalid_fields"][0]["field"] == "input.width"
