"""The official client, replicate-python 1.0.7, works against the sandbox unchanged."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from PIL import Image
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from kkiai_pipeline.sandbox import Sandbox

from .helpers import data_uri, version_of

SDXL = f"stability-ai/sdxl:{version_of('stability-ai/sdxl')}"
SDXL_INPUT = {"prompt": "a red shoe", "width": 128, "height": 128}


@contextmanager
def client_for(sandbox: Sandbox, token: str = "test") -> Iterator[Client]:
    """A client whose base URL excludes /v1, as replicate-python expects.

    Client has no close(); its httpx client is closed here so no socket is left to the GC.
    """
    client = Client(api_token=token, base_url=sandbox.base_url.removesuffix("/v1"), trust_env=False)
    client.poll_interval = 0.02
    try:
        yield client
    finally:
        client._client.close()


def png(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    assert image.format == "PNG"
    return image


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    with client_for(sandbox) as client:
        yield client


def test_run_returns_http_urls_as_strings(client: Client, sandbox: Sandbox) -> None:
    output = client.run(SDXL, input=SDXL_INPUT)
    assert isinstance(output, list) and len(output) == 1
    assert isinstance(output[0], str) and output[0].startswith("http://127.0.0.1:")  # http: is not wrapped
    assert png(httpx.get(output[0], trust_env=False).content).size == (128, 128)
    requests = sandbox.stats()["requests"]
    assert (requests["create"], requests["version"], requests["get"]) == (1, 1, 0)


def test_run_with_data_uri_outputs_returns_file_outputs(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.01, predict_seconds=0.05, data_uri_outputs=True)
    with client_for(sandbox) as client:
        output = client.run(SDXL, input={**SDXL_INPUT, "num_outputs": 2})
    assert isinstance(output, list) and len(output) == 2
    assert all(isinstance(item, FileOutput) for item in output)
    assert [png(item.read()).size for item in output] == [(128, 128), (128, 128)]  # decoded locally


def test_run_polls_when_the_wait_runs_out(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=2.5)
    with client_for(sandbox) as client:
        output = client.run(SDXL, input=SDXL_INPUT, wait=1)
    assert isinstance(output, list) and len(output) == 1
    assert sandbox.stats()["requests"]["get"] >= 1


def test_run_of_an_iterator_model_yields_the_animation_last(client: Client) -> None:
    ref = (
        f"andreasjansson/stable-diffusion-animation:{version_of('andreasjansson/stable-diffusion-animation')}"
    )
    input = {"prompt_start": "a", "prompt_end": "b", "width": 128, "height": 128, "num_animation_frames": 3}
    output = list(client.run(ref, input={**input, "intermediate_output": True}))
    assert len(output) == 4
    assert str(output[-1]).endswith("/out.gif")


def test_run_raises_model_error_on_failure(client: Client) -> None:
    with pytest.raises(ModelError, match="input contained the fail marker"):
        client.run(SDXL, input={**SDXL_INPUT, "prompt": "[sandbox:fail]"})


def test_create_and_wait_with_a_data_uri_input(client: Client, sandbox: Sandbox, scene_png: bytes) -> None:
    prediction = client.predictions.create(
        version=version_of("cjwbw/rembg"), input={"image": data_uri(scene_png)}
    )
    created_status = prediction.status
    prediction.wait()
    assert (created_status, prediction.status) == ("starting", "succeeded")
    assert isinstance(prediction.output, str)
    cutout = png(httpx.get(prediction.output, trust_env=False).content)
    assert cutout.mode == "RGBA"
    assert cutout.getchannel("A").getpixel((0, 0)) == 0
    assert sandbox.stats()["requests"]["get"] >= 1


def test_create_and_wait_with_a_sandbox_url_input(client: Client) -> None:
    first = client.predictions.create(version=SDXL.split(":")[1], input=SDXL_INPUT)
    first.wait()
    assert isinstance(first.output, list)
    second = client.predictions.create(version=version_of("cjwbw/rembg"), input={"image": first.output[0]})
    second.wait()
    assert second.status == "succeeded", second.error


def test_cancel_and_get(start_sandbox: Callable[..., Sandbox]) -> None:
    with client_for(start_sandbox(queue_seconds=0.0, predict_seconds=60.0)) as client:
        prediction = client.predictions.create(version=SDXL.split(":")[1], input=SDXL_INPUT)
        prediction.cancel()
        assert client.predictions.get(prediction.id).status == "canceled"


def test_bad_token_raises_401(start_sandbox: Callable[..., Sandbox]) -> None:
    with (
        client_for(start_sandbox(token="right"), token="wrong") as client,
        pytest.raises(ReplicateError) as caught,
    ):
        client.run(SDXL, input=SDXL_INPUT)
    assert (caught.value.status, caught.value.title) == (401, "Unauthenticated")


def test_unknown_version_raises_422(client: Client) -> None:
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(version="0" * 64, input={})
    assert (caught.value.status, caught.value.title) == (422, "Invalid version or not permitted")
