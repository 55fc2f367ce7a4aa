"""The pipeline shapes the throughput benchmark runs, as plain jobs that both runners understand.

A shape is a list of :class:`Job` in dependency order. Our runner gets it as a pipeline (templates
like ``{{ steps.gen0.output[0] }}``); the hand-written script and the sequential loop read the same
jobs directly, so all three make exactly the same predictions in the same dependency structure.

- ``single``: one stable-diffusion prediction (N = 1).
- ``wide``: N independent stable-diffusion predictions; critical path 1.
- ``deep``: N / DEPTH chains of stable-diffusion -> rembg -> rembg ...; critical path DEPTH.
- ``fanout``: N / 5 groups of one stable-diffusion with num_outputs=4 -> one rembg per output;
  critical path 2. With a ``foreach:`` in the pipeline format the four rembg are one step;
  without it they are written out as four steps (the same predictions).

Images are 64x64 so that the sandbox, drawing them, keeps up with thousands of predictions. This
module imports nothing from the package: the hand-written script must not lean on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What a user of the API hard-codes (the catalog's versions; throughput.py checks they still match).
SD = "stability-ai/stable-diffusion"
SD_VERSION = "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4"
REMBG = "cjwbw/rembg"
REMBG_VERSION = "fb8af171cfa1616ddcf1242c093f9c46bcada5ad4cf6f2fbe8b81b330ec5c003"
VERSIONS = {SD: SD_VERSION, REMBG: REMBG_VERSION}
LIST_OUTPUT = {SD}  # models whose output is a list of URLs (the others give one URL)

DEPTH = 5  # steps per chain of the deep shape
FAN = 4  # outputs of each fan-out generate, one rembg each
SHAPES = ("wide", "deep", "fanout")


@dataclass(frozen=True)
class Ref:
    """A later job's input that is an earlier job's output: element ``index``, or all of it if None."""

    job: str
    index: int | None = None


@dataclass(frozen=True)
class Job:
    """One prediction: a model, its input (where :class:`Ref` values name other jobs' outputs)."""

    id: str
    model: str
    input: dict[str, Any]
    fan: str | None = None  # the foreach step this job is one item of (fan-out only)
    deps: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        refs = tuple(v.job for v in self.input.values() if isinstance(v, Ref))
        object.__setattr__(self, "deps", refs)


@dataclass(frozen=True)
class Shape:
    """The jobs of one shape at one size, and its critical path in predictions."""

    name: str
    jobs: list[Job]
    depth: int

    @property
    def size(self) -> int:
        return len(self.jobs)


def _generate(job_id: str, *, seed: int, outputs: int = 1) -> Job:
    prompt = f"benchmark subject {seed}"
    size = {"width": 64, "height": 64, "num_inference_steps": 1}
    extra = {"num_outputs": outputs} if outputs > 1 else {}
    return Job(job_id, SD, {"prompt": prompt, **size, "seed": seed, **extra})


def _cutout(job_id: str, source: Ref, *, fan: str | None = None) -> Job:
    return Job(job_id, REMBG, {"image": source}, fan=fan)


def build(name: str, size: int) -> Shape:
    """The shape ``name`` with about ``size`` predictions (rounded down to whole chains or groups)."""
    if name == "single" or size == 1:
        return Shape("single", [_generate("gen0", seed=0)], 1)
    if name == "wide":
        return Shape(name, [_generate(f"gen{i}", seed=i) for i in range(size)], 1)
    if name == "deep":
        jobs = []
        for c in range(max(size // DEPTH, 1)):
            jobs.append(_generate(f"c{c}_0", seed=c))
            jobs += [
                _cutout(f"c{c}_{d}", Ref(f"c{c}_{d - 1}", None if d > 1 else 0)) for d in range(1, DEPTH)
            ]
        return Shape(name, jobs, DEPTH)
    if name == "fanout":
        jobs = []
        for g in range(max(size // (FAN + 1), 1)):
            jobs.append(_generate(f"gen{g}", seed=g, outputs=FAN))
            jobs += [_cutout(f"cut{g}_{i}", Ref(f"gen{g}", i), fan=f"cut{g}") for i in range(FAN)]
        return Shape(name, jobs, 2)
    raise ValueError(f"unknown shape {name!r} (known: single, {', '.join(SHAPES)})")


def _template(ref: Ref) -> str:
    if ref.index is None:
        return f"{{{{ steps.{ref.job}.output }}}}"
    return f"{{{{ steps.{ref.job}.output[{ref.index}] }}}}"


def pipeline_data(shape: Shape, *, foreach: bool) -> dict[str, Any]:
    """``shape`` as a pipeline file's mapping; with ``foreach`` each fan-out group is one foreach step."""
    steps: dict[str, Any] = {}
    for job in shape.jobs:
        if foreach and job.fan is not None:
            source = job.input["image"]
            steps[job.fan] = {
                "model": job.model,
                "foreach": f"{{{{ steps.{source.job}.output }}}}",
                "input": {"image": "{{ item }}"},
            }
            continue
        rendered = {k: _template(v) if isinstance(v, Ref) else v for k, v in job.input.items()}
        steps[job.id] = {"model": job.model, "input": rendered}
    return {"name": f"throughput_{shape.name}", "steps": steps}


def as_json(shape: Shape) -> dict[str, Any]:
    """``shape`` as JSON-able data (handed to the child processes)."""
    jobs = []
    for job in shape.jobs:
        inputs = {
            k: {"$ref": v.job, "index": v.index} if isinstance(v, Ref) else v for k, v in job.input.items()
        }
        jobs.append({"id": job.id, "model": job.model, "input": inputs, "fan": job.fan})
    return {"name": shape.name, "depth": shape.depth, "jobs": jobs}


def from_json(data: dict[str, Any]) -> Shape:
    """The inverse of :func:`as_json`."""
    jobs = []
    for raw in data["jobs"]:
        inputs = {
            k: Ref(v["$ref"], v["index"]) if isinstance(v, dict) and "$ref" in v else v
            for k, v in raw["input"].items()
        }
        jobs.append(Job(raw["id"], raw["model"], inputs, fan=raw["fan"]))
    return Shape(data["name"], jobs, data["depth"])
