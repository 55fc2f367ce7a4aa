"""Jinja2 templates in step inputs: parsing, finding references, rendering.

A string value that contains ``{{`` or ``{%`` is a template. A template that is exactly one
``{{ expression }}`` evaluates to the expression's native value (a list stays a list, a number a
number); any other template renders to a string. Templates run in Jinja2's immutable sandbox with
undefined names as errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

_MARKERS = ("{{", "{%", "{#")


class TemplateProblem(Exception):
    """A template could not be parsed or rendered; the message is for the user."""


@dataclass(frozen=True)
class References:
    """What a template reads: the step ids under ``steps`` and the keys under ``params``."""

    steps: frozenset[str]
    params: frozenset[str]
    names: frozenset[str]


@dataclass(frozen=True)
class Template:
    """One parsed template value."""

    source: str
    references: References
    _render: Callable[[Mapping[str, Any]], Any]

    def render(self, context: Mapping[str, Any]) -> Any:
        """The value for ``context``; raises TemplateProblem with a readable message."""
        try:
            value = self._render(context)
        except jinja2.UndefinedError as exc:
            raise TemplateProblem(f"undefined value in '{self.source}': {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"cannot render '{self.source}': {exc}") from exc
        except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise TemplateProblem(f"cannot render '{self.source}': {exc}") from exc
        if isinstance(value, jinja2.Undefined):
            reason = value._undefined_message  # the same text StrictUndefined raises with
            raise TemplateProblem(f"undefined value in '{self.source}': {reason}")
        return value


def is_template(value: object) -> bool:
    """Whether ``value`` is a string holding Jinja2 syntax."""
    return isinstance(value, str) and any(m in value for m in _MARKERS)


class Templates:
    """The sandboxed Jinja2 environment shared by all templates of a run."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        self.env.globals.update(functions or {})

    def parse(self, source: str) -> Template:
        """Parse ``source``; raises TemplateProblem on a syntax error."""
        try:
            tree = self.env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error in '{source}': {exc.message}") from exc
        references = find_references(tree)
        expression = _single_expression(source, tree)
        if expression is not None:
            compiled = self.env.compile_expression(expression, undefined_to_none=False)
            return Template(source, references, lambda ctx: compiled(**ctx))
        template = self.env.from_string(tree)
        return Template(source, references, lambda ctx: template.render(**ctx))


_LONE_EXPRESSION = re.compile(r"^\s*\{\{[-+]?(.*)[-+]?\}\}\s*$", re.DOTALL)


def _single_expression(source: str, tree: nodes.Template) -> str | None:
    """The expression's text if the template is exactly one ``{{ ... }}`` (whitespace around ok)."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [n for n in tree.body[0].nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    match = _LONE_EXPRESSION.match(source)
    return match.group(1) if match else None


def find_references(tree: nodes.Template) -> References:
    """Walk the syntax tree for ``steps.<id>`` / ``steps['<id>']`` and ``params.<key>`` chains."""
    steps: set[str] = set()
    params: set[str] = set()
    names = meta.find_undeclared_variables(tree)
    for node in _attribute_chains(tree):
        root, first = _chain_root(node)
        if root == "steps" and first is not None:
            steps.add(first)
        elif root == "params" and first is not None:
            params.add(first)
    return References(frozenset(steps), frozenset(params), frozenset(names))


def _attribute_chains(tree: nodes.Node) -> Iterator[nodes.Getattr | nodes.Getitem]:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
            yield node


def _chain_root(node: nodes.Getattr | nodes.Getitem) -> tuple[str, str | None]:
    assert isinstance(node.node, nodes.Name)
    if isinstance(node, nodes.Getattr):
        return node.node.name, node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.node.name, node.arg.value
    return node.node.name, "*"
