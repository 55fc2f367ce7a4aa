from __future__ import annotations

import pytest

from kkiai_pipeline.templating import TemplateLimits, TemplateProblem, Templates, is_template

CONTEXT = {
    "params": {"subject": "a mug", "n": 42, "flag": "True"},
    "steps": {"gen": {"output": ["u0", "u1"]}, "one": {"output": "single"}},
}


@pytest.fixture
def templates() -> Templates:
    return Templates()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ steps.gen.output }}", ["u0", "u1"]),
        ("{{ steps.gen.output[1] }}", "u1"),
        ("  {{ params.n }}  ", 42),
        ("{{ params.flag }}", "True"),  # no literal_eval: a string stays a string
        ("{{ params.n }}{{ params.n }}", "4242"),
        ("n={{ params.n }}", "n=42"),
        ("{{ steps['one'].output }}", "single"),
        ('{{ "}}" }}', "}}"),
        ("{% for u in steps.gen.output %}{{ u }};{% endfor %}", "u0;u1;"),
    ],
)
def test_render_keeps_native_type_only_for_a_lone_expression(
    templates: Templates, source: str, expected: object
) -> None:
    assert templates.parse(source).render(CONTEXT) == expected


@pytest.mark.parametrize(
    ("source", "steps", "params"),
    [
        ("{{ steps.gen.output[0] }} {{ params.subject }}", {"gen"}, {"subject"}),
        ("{{ steps['remove_bg'].output }}", {"remove_bg"}, set()),
        ("{% for x in steps.gen2.output %}{{ x }}{% endfor %}", {"gen2"}, set()),
        ("{{ steps[params.which].output }}", {"*"}, {"which"}),
        ("plain {{ 1 + 2 }}", set(), set()),
    ],
)
def test_references_come_from_the_syntax_tree(
    templates: Templates, source: str, steps: set[str], params: set[str]
) -> None:
    refs = templates.parse(source).references
    assert refs.steps == steps
    assert refs.params == params


def test_loop_variables_are_not_unknown_names(templates: Templates) -> None:
    refs = templates.parse("{% for x in steps.a.output %}{{ x }}{% endfor %}").references
    assert refs.names == {"steps"}


def test_undefined_is_an_error_not_an_empty_string(templates: Templates) -> None:
    with pytest.raises(TemplateProblem, match=r"undefined value in '\{\{ steps.nope.output \}\}'.*nope"):
        templates.parse("{{ steps.nope.output }}").render(CONTEXT)
    with pytest.raises(TemplateProblem, match="list object has no element 5"):
        templates.parse("{{ steps.gen.output[5] }}").render(CONTEXT)
    with pytest.raises(TemplateProblem, match="undefined value"):
        templates.parse("a {{ params.missing }} b").render(CONTEXT)


def test_the_sandbox_blocks_unsafe_attributes(templates: Templates) -> None:
    with pytest.raises(TemplateProblem, match="unsafe"):
        templates.parse("{{ params.subject.__class__ }}").render(CONTEXT)


def test_syntax_errors_name_the_template(templates: Templates) -> None:
    with pytest.raises(TemplateProblem, match=r"template syntax error in '\{\{ steps.gen.output\[ \}\}'"):
        templates.parse("{{ steps.gen.output[ }}")


def test_functions_are_available_to_templates() -> None:
    templates = Templates({"shout": lambda s: s.upper()})
    assert templates.parse("{{ shout(params.subject) }}").render(CONTEXT) == "A MUG"
    assert templates.parse("{{ shout(params.subject) }}").references.names == {"params"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("{{ x }}", True), ("{% if a %}b{% endif %}", True), ("a { b }", False), (3, False)],
)
def test_is_template(value: object, expected: bool) -> None:
    assert is_template(value) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{- params.n -}}", 3),
        ("  {{ params.n }}\n", 3),
        ("{{ params.items }}", [1, 2]),
        ("{{ params.keys }}", "k"),
        ("{% for x in params.items %}{{ x }}{% endfor %}", "12"),
    ],
)
def test_lone_expressions_and_user_keys_before_methods(source: str, expected: object) -> None:
    context = {"params": {"n": 3, "items": [1, 2], "keys": "k"}, "steps": {}}
    assert Templates().parse(source).render(context) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'a' * 10**9 }}", "the result would be more than 1,000 characters (the size budget)"),
        ("{{ 'a' * 600 ~ 'b' * 600 }}", "the result would be more than 1,000 characters (the size budget)"),
        (
            "{% for i in range(3) %}{{ 'a' * 400 }}{% endfor %}",
            "the rendered text would be more than 1,000 characters (the size budget)",
        ),
        (
            "{{ lipsum(10**7) }}",
            "lipsum(n) x 1000 (at most 100 paragraphs) 10,000,000,000 is over the limit of 100,000",
        ),
        (
            "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
            "rendering took longer than 0.2 s (the time budget)",
        ),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "it recurses too deeply"),
        ("{{ 10 ** (10 ** 10) }}", "a number of more than 4,000 digits"),
    ],
)
def test_rendering_is_bounded(source: str, message: str) -> None:
    templates = Templates(limits=TemplateLimits(seconds=0.2, max_value_chars=1000))
    with pytest.raises(TemplateProblem) as caught:
        templates.parse(source).render({"params": {}, "steps": {}})
    assert str(caught.value) == f"cannot render '{source}': {message}"
