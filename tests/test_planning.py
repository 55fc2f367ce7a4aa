from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest

from kkiai_pipeline import planning
from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.errors import PipelineError
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.localfiles import LocalFiles
from kkiai_pipeline.orchestrator import check_cog_servers
from kkiai_pipeline.pipeline import parse_pipeline, read_pipeline_file
from kkiai_pipeline.planning import Plan, plan, render_input
from kkiai_pipeline.settings import ApiSettings, CogSettings, Settings
from kkiai_pipeline.templating import Template, TemplateProblem, Templates

SHIPPED = Path(__file__).parent.parent / "pipelines"

SOURCE = Path("p.yaml")


def make_plan(steps: dict[str, object], params: dict[str, object] | None = None) -> Plan:
    pipeline = parse_pipeline({"name": "p", "params": params or {}, "steps": steps}, source=SOURCE)
    return plan(pipeline, catalog=default_catalog(), templates=Templates())


def problems(steps: dict[str, object], params: dict[str, object] | None = None) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        make_plan(steps, params)
    return [str(p) for p in caught.value.problems]


def test_order_levels_and_dependencies() -> None:
    result = make_plan(
        {
            "cut": {"model": "cjwbw/rembg", "input": {"image": "{{ steps.clean.output }}"}},
            "gen": {"model": "stability-ai/sdxl", "input": {"prompt": "{{ params.s }}"}},
            "clean": {
                "model": "sujaykhandekar/object-removal",
                "input": {"image_path": "{{ steps.gen.output[0] }}"},
            },
            "side": {"model": "stability-ai/sdxl", "input": {"prompt": "x"}, "needs": ["gen"]},
        },
        params={"s": "a mug"},
    )
    assert [(s.id, s.level) for s in result.steps] == [("gen", 0), ("clean", 1), ("cut", 2), ("side", 1)]
    assert result["cut"].depends_on == {"clean"}
    assert result["side"].depends_on == {"gen"}
    assert [s.id for s in result.dependents("gen")] == ["clean", "cut", "side"]
    assert result["gen"].model.version_ref.startswith("stability-ai/sdxl:7762fd07")
    assert result["clean"].templated_fields == {"image_path"}


def test_models_by_any_name() -> None:
    sdxl = default_catalog().resolve("stability-ai/sdxl")
    result = make_plan(
        {
            "a": {"model": sdxl.version, "input": {"prompt": "x"}},
            "b": {"model": sdxl.version_ref, "input": {"prompt": "x"}},
        }
    )
    assert {s.model.ref for s in result.steps} == {"stability-ai/sdxl"}


def test_render_nested_values() -> None:
    result = make_plan(
        {
            "gen": {
                "model": "stability-ai/sdxl",
                "input": {"prompt": "{{ params.s }} on {{ params.t }}", "num_outputs": 2},
            }
        },
        params={"s": "a mug", "t": "marble"},
    )
    context = {"params": result.pipeline.params, "steps": {}}
    assert render_input(result["gen"], context) == {"prompt": "a mug on marble", "num_outputs": 2}


def test_cycle_is_printed() -> None:
    found = problems(
        {
            "a": {"model": "cjwbw/rembg", "input": {"image": "{{ steps.b.output }}"}},
            "b": {"model": "cjwbw/rembg", "input": {"image": "{{ steps.a.output }}"}},
        }
    )
    assert found == [f"{SOURCE}, step 'a': dependency cycle: a → b → a"]


def test_every_reference_problem_is_reported() -> None:
    found = problems(
        {
            "gen": {"model": "stability-ai/sdxll", "input": {"prompt": "{{ params.subjet }}"}},
            "cut": {
                "model": "stability-ai/sdxl",
                "input": {
                    "image": "{{ steps.gne.output }}",
                    "prompt": "{{ steps.gen.output[ }}",
                    "mask": "{{ foo }}",
                },
                "needs": ["nope"],
            },
        },
        params={"subject": "x"},
    )
    assert found[0].startswith(
        f"{SOURCE}, step 'gen', field 'model': unknown model 'stability-ai/sdxll'. Did you mean 'stability-ai/sdxl'?"
    )
    assert found[1:] == [
        f"{SOURCE}, step 'gen', field 'input.prompt': reference to unknown param 'subjet'; did you mean 'subject'?",
        f"{SOURCE}, step 'cut', field 'needs': 'needs' names unknown step 'nope'",
        f"{SOURCE}, step 'cut', field 'input.image': reference to unknown step 'gne'; did you mean 'gen'?",
        f"{SOURCE}, step 'cut', field 'input.prompt': template syntax error in '{{{{ steps.gen.output[ }}}}': unexpected '}}', expected ']'",
        f"{SOURCE}, step 'cut', field 'input.mask': unknown name 'foo' in '{{{{ foo }}}}' (templates can use: steps, params)",
    ]


def test_a_long_chain_in_reverse_order_plans_without_recursion() -> None:
    n = 10_000
    steps = {
        f"s{i}": {
            "model": "cjwbw/rembg",
            "input": {"image": f"{{{{ steps.s{i - 1}.output }}}}" if i else "https://x/y.png"},
        }
        for i in reversed(range(n))
    }
    the_plan = make_plan(steps)
    assert [s.id for s in the_plan.steps] == [f"s{i}" for i in range(n)]
    assert the_plan.steps[-1].level == n - 1


def test_a_long_cycle_is_reported_as_a_cycle() -> None:
    n = 2000
    steps = {
        f"s{i}": {"model": "cjwbw/rembg", "input": {"image": f"{{{{ steps.s{(i + 1) % n}.output }}}}"}}
        for i in range(n)
    }
    with pytest.raises(PipelineError) as caught:
        make_plan(steps)
    (problem,) = caught.value.problems
    assert problem.message == (
        "dependency cycle: s0 → s1 → s2 → s3 → s4 → s5 → s6 → s7 → … (1985 more) … "
        "→ s1993 → s1994 → s1995 → s1996 → s1997 → s1998 → s1999 → s0"
    )


# -- what templates hand on, checked on stand-in outputs -----------------------------------------------

SDXL_2 = {"model": "stability-ai/sdxl", "input": {"prompt": "x", "num_outputs": 2}}
CUT = "cjwbw/rembg"


def rembg(image: str) -> dict[str, object]:
    return {"model": CUT, "input": {"image": image}}


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED.glob("*.yaml")))
def test_every_shipped_pipeline_plans(name: str) -> None:
    source = SHIPPED / f"{name}.yaml"
    pipeline = parse_pipeline(read_pipeline_file(source), source=source)
    templates = Templates(functions=LocalFiles(SHIPPED, max_bytes=1 << 20).functions())
    assert plan(pipeline, catalog=default_catalog(), templates=templates).steps


def test_a_list_where_one_file_is_expected() -> None:
    found = problems({"generate": SDXL_2, "cut": rembg("{{ steps.generate.output }}")})
    assert found == [
        f"{SOURCE}, step 'cut', field 'input.image': image must be a string, got a list; "
        "steps.generate.output is a list of files (num_outputs: 2): take one with steps.generate.output[0], "
        "or fan out over it with foreach"
    ]


@pytest.mark.parametrize(
    ("generate", "index", "why"),
    [
        (SDXL_2, "5", "2 files (num_outputs: 2)"),
        (SDXL_2, "-3", "2 files (num_outputs: 2)"),
        (
            {"model": "stability-ai/sdxl", "input": {"prompt": "x"}},
            "1",
            "1 file (num_outputs: 1, the default)",
        ),
        (
            {
                "model": "stability-ai/sdxl",
                "input": {"prompt": "x", "num_outputs": "{{ steps.other.output | length }}"},
            },
            "4",
            "4 files (num_outputs is at most 4)",
        ),
    ],
)
def test_an_index_past_the_end_of_the_outputs(generate: dict[str, object], index: str, why: str) -> None:
    template = f"{{{{ steps.generate.output[{index}] }}}}"
    steps = {"other": SDXL_2, "generate": generate, "cut": rembg(template)}
    assert problems(steps) == [
        f"{SOURCE}, step 'cut', field 'input.image': steps.generate.output has {why}, "
        f"so there is no [{index}] (in '{template}')"
    ]


def test_indexes_that_may_exist_pass() -> None:
    steps = {
        "generate": SDXL_2,
        "a": rembg("{{ steps.generate.output[1] }}"),
        "b": rembg("{{ steps.generate.output[-2] }}"),
        "c": rembg("{{ steps.generate.output | last }}"),
        "morph": {
            "model": "andreasjansson/stable-diffusion-animation",
            "input": {"prompt_start": "a", "prompt_end": "b"},
        },
        "d": rembg("{{ steps.morph.output[7] }}"),  # its length is known only at run time
        "e": rembg("{{ steps.morph.output[-1] }}"),
    }
    assert [s.id for s in make_plan(steps).steps] == list(steps)


def test_one_file_is_not_a_list() -> None:
    found = problems(
        {
            "cut": rembg("https://x/y.png"),
            "a": rembg("{{ steps.cut.output[0] }}"),
            "b": rembg("{{ steps.cut.output | first }}"),
            "c": {
                "model": "stability-ai/sdxl",
                "input": {"prompt": "x", "num_outputs": "{{ steps.cut.output }}"},
            },
        }
    )
    one_file = "steps.cut.output is one file URL (cjwbw/rembg returns a single file)"
    assert found == [
        f"{SOURCE}, step 'a', field 'input.image': {one_file}, not a list: use it without [0] "
        "(in '{{ steps.cut.output[0] }}')",
        f"{SOURCE}, step 'b', field 'input.image': {one_file}, not a list: there is nothing to loop over "
        "(in '{{ steps.cut.output | first }}')",
        f"{SOURCE}, step 'c', field 'input.num_outputs': num_outputs must be an integer, got the string "
        f"'https://planning.invalid/cut/0.png'; {one_file}",
    ]


def test_foreach_over_what_is_not_a_list() -> None:
    found = problems(
        {
            "cut": rembg("https://x/y.png"),
            "a": {"model": CUT, "foreach": "{{ steps.cut.output }}", "input": {"image": "{{ item }}"}},
            "b": {"model": CUT, "foreach": "{{ params.subject }}", "input": {"image": "{{ item }}"}},
            "c": {"model": CUT, "foreach": "{{ steps.cut.output[0] }}", "input": {"image": "{{ item }}"}},
        },
        params={"subject": "a mug"},
    )
    assert found == [
        f"{SOURCE}, step 'a', field 'foreach': foreach must give a list, but '{{{{ steps.cut.output }}}}' gives "
        "one file URL (steps.cut.output; cjwbw/rembg returns a single file)",
        f"{SOURCE}, step 'b', field 'foreach': foreach must give a list, but '{{{{ params.subject }}}}' gives "
        "the string 'a mug'",
        f"{SOURCE}, step 'c', field 'foreach': steps.cut.output is one file URL (cjwbw/rembg returns a single "
        "file), not a list: use it without [0] (in '{{ steps.cut.output[0] }}')",
    ]


def test_foreach_items_and_outputs_have_their_shapes() -> None:
    shots = {
        "model": "stability-ai/sdxl",
        "foreach": ["a", "b"],
        "input": {"prompt": "{{ item }}", "num_outputs": 3},
    }
    found = problems(
        {
            "shots": shots,
            "nested": {"model": CUT, "foreach": "{{ steps.shots.output }}", "input": {"image": "{{ item }}"}},
            "flat": {
                "model": CUT,
                "foreach": "{{ steps.shots.output | sum(start=[]) }}",
                "input": {"image": "{{ item }}"},
            },
            "ok": rembg("{{ steps.shots.output[1][2] }}"),
            "past": rembg("{{ steps.shots.output[1][3] }}"),
            "items": rembg("{{ steps.shots.output[2][0] }}"),
            "literal": {"model": CUT, "foreach": ["https://x/y.png", 7], "input": {"image": "{{ item }}"}},
        }
    )
    assert found == [
        f"{SOURCE}, step 'nested', field 'input.image': item 0: image must be a string, got a list; "
        "steps.shots.output[0] is a list of files (num_outputs: 3): take one with steps.shots.output[0][0], "
        "or fan out over it with foreach",
        f"{SOURCE}, step 'past', field 'input.image': steps.shots.output[1] has 3 files (num_outputs: 3), "
        "so there is no [3] (in '{{ steps.shots.output[1][3] }}')",
        f"{SOURCE}, step 'items', field 'input.image': steps.shots.output has 2 entries "
        "(one per item of its foreach), so there is no [2] (in '{{ steps.shots.output[2][0] }}')",
        f"{SOURCE}, step 'literal', field 'input.image': item 1: image must be a string, got 7 (an integer)",
    ]


def test_what_stand_ins_cannot_decide_is_left_to_run_time() -> None:
    steps = {
        "generate": SDXL_2,
        # the stand-in URLs end in .png: real ones may end in .webp
        "picked": rembg("{{ steps.generate.output | select('search', 'webp') | first }}"),
        "filtered": {
            "model": CUT,
            "foreach": "{{ steps.generate.output | select('search', 'webp') | list }}",
            "input": {"image": "{{ item }}"},
        },
        "after": rembg("{{ steps.filtered.output[5] }}"),  # the filtered list's length is not known
    }
    assert [s.id for s in make_plan(steps).steps] == list(steps)


def test_stand_ins_never_reach_a_rendered_input() -> None:
    result = make_plan({"generate": SDXL_2, "cut": rembg("{{ steps.generate.output[1] }}")})
    rendered = render_input(result["cut"], {"params": {}, "steps": {"generate": {"output": ["u0", "u1"]}}})
    assert rendered == {"image": "u1"}


@pytest.mark.parametrize(
    "source",
    [
        "{{ steps.a.output }}",
        "{{ steps['a'].output[1] }}",
        "{{ steps.a.output[2] }}",
        "{{ steps.b.output }}",
        "{{ nothing }}",
        "{{ params.items }}",
        "{{ params.text.upper }}",
        "{{ steps.a.output[0].x }}",
    ],
)
def test_a_lookup_chain_renders_like_a_compiled_template(source: str) -> None:
    context = {"steps": {"a": {"output": ["u0", "u1"]}}, "params": {"items": 3, "text": "t"}}
    fast = Templates().parse(source)
    compiled = Templates().parse(source + "{{ '' if false }}")  # not a lone lookup: compiled

    def outcome(template: Template) -> str:
        try:
            value = template.render(context)
        except TemplateProblem as exc:
            return str(exc).split("': ", 1)[1]
        return str(value)

    assert outcome(fast) == outcome(compiled)


# -- Cog servers are probed before the first paid step -------------------------------------------------

COG_STEPS = {
    "generate": SDXL_2,
    "cleanup": {
        "model": "sujaykhandekar/object-removal",
        "input": {"image_path": "{{ steps.generate.output[1] }}"},
    },
    "cutout": {**rembg("{{ steps.cleanup.output }}"), "backend": "cog"},
    "again": {**rembg("{{ steps.cutout.output }}"), "backend": "cog"},
}


def cog_settings(tmp_path: Path, servers: dict[str, str]) -> Settings:
    return Settings(
        api=ApiSettings("kkiai", "https://api.invalid/v1", "t", ClientOptions()),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=tmp_path,
        cog=CogSettings(servers=servers),
    )


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


def cog_problems(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> list[str]:
    try:
        asyncio.run(check_cog_servers(make_plan(COG_STEPS), settings, transport=transport))
    except PipelineError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_a_cog_server_that_cannot_be_reached_is_a_problem_of_every_step_on_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    found = cog_problems(cog_settings(tmp_path, {CUT: url}))
    trouble = f"the Cog server for {CUT} at {url} cannot be reached (ConnectError: All connection attempts failed); is it running?"
    assert found == [
        f"{SOURCE}, step 'cutout', field 'backend': {trouble}",
        f"{SOURCE}, step 'again', field 'backend': {trouble}",
    ]


def health(status: int, body: object, seen: list[str]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        return httpx.Response(status, content=json.dumps(body).encode())

    return httpx.MockTransport(answer)


@pytest.mark.parametrize(
    ("status", "body", "trouble"),
    [
        (200, {"status": "READY"}, None),
        (200, {"status": "BUSY"}, None),
        (200, {"status": "STARTING"}, None),  # loading its weights: the client waits for it
        (200, {"status": "SETUP_FAILED", "setup": {}}, "reports SETUP_FAILED"),
        (
            404,
            {"detail": "Not Found"},
            "answered 404 to GET /health-check without a Cog status; is it a Cog server?",
        ),
        (200, ["READY"], "answered 200 to GET /health-check without a Cog status; is it a Cog server?"),
    ],
)
def test_a_cog_server_is_asked_once_for_its_health(
    tmp_path: Path, status: int, body: object, trouble: str | None
) -> None:
    seen: list[str] = []
    found = cog_problems(cog_settings(tmp_path, {CUT: "http://cog.test:5000/"}), health(status, body, seen))
    assert seen == ["GET http://cog.test:5000/health-check"]
    if trouble is None:
        assert found == []
    else:
        where = f"the Cog server for {CUT} at http://cog.test:5000"
        assert found == [
            f"{SOURCE}, step 'cutout', field 'backend': {where} {trouble}",
            f"{SOURCE}, step 'again', field 'backend': {where} {trouble}",
        ]


def test_steps_on_the_api_are_not_probed(tmp_path: Path) -> None:
    seen: list[str] = []
    settings = cog_settings(
        tmp_path, {"stability-ai/sdxl": "http://cog.test:5000"}
    )  # generate runs on the API
    assert cog_problems(settings, health(200, {"status": "READY"}, seen)) == []
    assert seen == []


def test_the_shape_check_leaves_what_it_has_no_time_for_to_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planning, "SHAPE_CHECK_SECONDS", -1.0)
    assert make_plan({"generate": SDXL_2, "cut": rembg("{{ steps.generate.output }}")}).steps
