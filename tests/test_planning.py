from __future__ import annotations

from pathlib import Path

import pytest

from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.errors import PipelineError
from kkiai_pipeline.pipeline import parse_pipeline
from kkiai_pipeline.planning import Plan, plan, render_input
from kkiai_pipeline.templating import Templates

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
