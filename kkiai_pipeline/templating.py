"""Jinja2 templates in step inputs: parsing, finding references, rendering, all bounded.

A string value that contains ``{{`` or ``{%`` is a template. A template that is exactly one
``{{ expression }}`` (found on the syntax tree, whitespace control included) evaluates to the expression's
native value (a list stays a list, a number a number); any other template renders to a string. Templates
run in Jinja2's immutable sandbox with undefined names as errors, and ``x.name`` on a mapping reads the
key ``name`` before any method of the mapping (``params.items`` is the user's param).

A pipeline file may come from anyone, so rendering is bounded (TemplateLimits): a time budget per
rendering, and a size budget for every value a template produces, checked before the operations that
could allocate too much (``'a' * n``, ``n ** m``, ``center(n)``, ``lipsum(n)``, string formatting
widths, ...) and on every result (operators, calls, filters, ``~``, output). Loops check the clock on
each item. A template that exceeds a budget, recurses too deep or runs out of memory is a
TemplateProblem, never a traceback.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
import types
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, _PassArg, generate_lorem_ipsum, pass_environment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

_MARKERS = ("{{", "{%", "{#")
_VALUE = "kkiai_value"  # the variable a lone expression is assigned to (see Templates.parse)
_ITER, _CONCAT = "_kkiai_iter", "_kkiai_concat"  # hooks spliced into the syntax tree


@dataclass(frozen=True)
class TemplateLimits:
    """What one rendering may spend."""

    seconds: float = 2.0  # wall time of one rendering
    max_value_chars: int = 2_000_000  # any value a template makes (the largest data: URI of 1 MB fits)
    max_source_chars: int = 100_000  # the template text itself
    max_items: int = 100_000  # range(), batch(), slice() and similar counts


class Measured(list):  # type: ignore[type-arg]
    """A list bounded where it was made (e.g. the rows of a file, see :mod:`.rowfiles`): the size budget
    counts it by its length, not its contents, which were not made by a template."""


class TemplateProblem(Exception):
    """A template could not be parsed or rendered; the message is for the user."""


class _Exceeded(SecurityError):
    """A template went over one of its budgets."""


@dataclass(frozen=True)
class References:
    """What a template reads: the step ids under ``steps`` and the keys under ``params``."""

    steps: frozenset[str]
    params: frozenset[str]
    names: frozenset[str]


class _Budget:
    """The limits of the rendering in progress, and its deadline."""

    def __init__(self, limits: TemplateLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Exceeded(f"rendering took longer than {self.limits.seconds:g} s (the time budget)")

    def allow(self, size: float, what: str = "the result") -> None:
        if size > self.limits.max_value_chars:
            raise _Exceeded(
                f"{what} would be more than {self.limits.max_value_chars:,} characters (the size budget)"
            )

    def count(self, number: Any, what: str) -> None:
        if isinstance(number, int) and number > self.limits.max_items:
            raise _Exceeded(f"{what} {number:,} is over the limit of {self.limits.max_items:,}")

    def check(self, value: Any) -> Any:
        self.allow(estimate(value, self))
        return value


_MAX_INT_DIGITS = 4000  # under Python's int_max_str_digits (4300): every number can be printed
_MAX_INT_BITS = _MAX_INT_DIGITS * 332 // 100
_CURRENT: ContextVar[_Budget | None] = ContextVar("kkiai_template_budget", default=None)


def _budget() -> _Budget:
    # Outside a rendering (e.g. Jinja folding a constant while compiling): default limits.
    return _CURRENT.get() or _Budget(TemplateLimits())


def estimate(value: Any, budget: _Budget | None = None) -> int:
    """Roughly how many characters ``str(value)`` has, without making that string; stops past the budget.

    Shared references count once per occurrence (that is what printing them costs).
    """
    budget = budget or _budget()
    limit = budget.limits.max_value_chars
    total = 0
    stack = [value]
    steps = 0
    while stack and total <= limit:
        item = stack.pop()
        steps += 1
        if steps % 4096 == 0:
            budget.tick()
        if isinstance(item, str | bytes | bytearray):
            total += len(item)
        elif item is None or isinstance(item, bool | float):
            total += 5
        elif isinstance(item, int):
            if item.bit_length() > _MAX_INT_BITS:  # Python refuses to print it, JSON cannot carry it
                raise _Exceeded(f"a number of more than {_MAX_INT_DIGITS:,} digits")
            total += item.bit_length() * 31 // 100 + 2  # decimal digits, without converting
        elif isinstance(item, Measured):
            total += 2 + 2 * len(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack += item.keys()
            stack += item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack += item
        elif isinstance(item, Namespace):
            stack.append(dict(item._Namespace__attrs))  # its repr shows them
        elif not isinstance(item, jinja2.Undefined):
            total += 16  # macros, generators, loop objects: short reprs
    return total


# --- checks made before an operation that could allocate too much -------------------------------------

_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_printf(budget: _Budget, fmt: str, args: Any) -> None:
    """``fmt % args``: no width or precision past the size budget, none taken from the arguments."""
    for width, precision in _PRINTF.findall(fmt):
        for number in (width, precision):
            if number == "*":
                raise _Exceeded("a '*' width or precision in a % format is not allowed in templates")
            if number:
                budget.allow(int(number[:12]), "a % format width")
    budget.allow(len(fmt) + estimate(args, budget))


def _check_binop(budget: _Budget, operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(times, int) and isinstance(seq, str | list | tuple) and times > 0:
                budget.allow(estimate(seq, budget) * times)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 < right:
        if left.bit_length() * right > _MAX_INT_BITS:
            raise _Exceeded(f"a number of more than {_MAX_INT_DIGITS:,} digits")
    elif operator == "%" and isinstance(left, str):
        _check_printf(budget, left, right)


def _args(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call by parameter name (defaults applied); empty when they do not bind."""
    signature = _signature(func)
    if signature is None:
        return {}
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return {}  # the call itself will say what is wrong
    bound.apply_defaults()
    return dict(bound.arguments)


@functools.lru_cache(maxsize=256)
def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _lines(text: str) -> int:
    return text.count("\n") + 1


def _grow_check(budget: _Budget, name: str, given: Mapping[str, Any]) -> None:
    """Checks by the name of a filter, str method or global, on its arguments by name."""
    s = _text(given.get("s", given.get("value", given.get("self", ""))))
    if name in ("center", "ljust", "rjust", "zfill") and isinstance(given.get("width"), int):
        budget.allow(given["width"])
    elif name == "indent":
        width = given.get("width", 4)
        budget.allow(len(s) + _lines(s) * (len(width) if isinstance(width, str) else _int(width)))
    elif name == "wordwrap":
        wrap = given.get("wrapstring") or "\n"
        budget.allow(len(s) + (len(s) // max(_int(given.get("width", 79)), 1) + 1) * len(_text(wrap)))
    elif name == "expandtabs":
        budget.allow(len(s) + s.count("\t") * _int(given.get("tabsize", 8)))
    elif name == "replace":
        old, new, count = _text(given.get("old")), _text(given.get("new")), given.get("count")
        found = (s.count(old) if old else len(s) + 1) if not isinstance(count, int) or count < 0 else count
        budget.allow(len(s) + found * max(len(new) - len(old), 0))
    elif name == "translate":
        table = given.get("table")
        widest = (
            max((estimate(v, budget) for v in table.values()), default=1) if isinstance(table, Mapping) else 1
        )
        budget.allow(len(s) * max(widest, 1))
    elif name == "to_bytes":
        budget.allow(_int(given.get("length", 1)), "the bytes")
    elif name in ("batch",):
        budget.count(given.get("linecount"), "batch()")
    elif name in ("slice",):
        budget.count(given.get("slices"), "slice()")
    elif name == "tojson" and isinstance(given.get("indent"), int):
        budget.count(given["indent"] * 10_000, "tojson(indent=...) x 10,000")
    elif name == "lipsum":
        budget.count(_int(given.get("n", 5)) * 1000, "lipsum(n) x 1000 (at most 100 paragraphs)")
        budget.allow(_int(given.get("n", 5)) * _int(given.get("max", 100)) * 12, "the lorem ipsum")
    elif name == "format":
        _check_printf(budget, s, given.get("args") or given.get("kwargs"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _materialize(budget: _Budget, items: Any) -> list[Any]:
    """An iterable as a list, checking the clock and the size as it goes (join, sum on generators)."""
    out: list[Any] = []
    size = 0
    for item in items:
        budget.tick()
        size += estimate(item, budget) + 2
        budget.allow(size)
        out.append(item)
    return out


# --- the environment --------------------------------------------------------------------------------


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with budgets on every operator, call, filter, loop and output."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self) -> None:
        super().__init__(
            undefined=jinja2.StrictUndefined, autoescape=False, optimized=False, finalize=self._finalize
        )
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters["join"] = _bounded_filter("join", _join)
        self.filters["sum"] = _bounded_filter("sum", _sum)
        self.globals["lipsum"] = _lipsum
        self.globals[_ITER] = _bounded_iter
        self.globals[_CONCAT] = _concat

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        _check_binop(budget, operator, left, right)
        return budget.check(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(owner, str | int):
            given = _args(__obj, args, kwargs)
            given.setdefault("self", owner)
            if __obj.__name__ == "join" and args:
                args = (_materialize(budget, args[0]), *args[1:])
                budget.allow(sum(estimate(a, budget) for a in args[0]) + len(str(owner)) * len(args[0]))
            _grow_check(budget, __obj.__name__, given)
        return budget.check(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().tick()
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]  # the user's key, not the mapping's method of the same name
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        @functools.wraps(wrapped)
        def bounded(*args: Any, **kwargs: Any) -> str:
            budget = _budget()
            for _, _, spec, _ in Formatter().parse(fmt):
                for number in _DIGITS.findall(spec or ""):
                    budget.allow(int(number[:12]), "a format width")
                if spec and "{" in spec:
                    raise _Exceeded("a format width taken from the arguments is not allowed in templates")
            budget.allow(len(fmt) + estimate([args, kwargs], budget))
            return budget.check(wrapped(*args, **kwargs))  # type: ignore[no-any-return]

        return bounded

    @staticmethod
    def _finalize(value: Any) -> Any:
        budget = _budget()
        budget.tick()
        return budget.check(value)


_CONTEXT_PARAMETERS = ("eval_ctx", "environment", "context", "ctx", "env")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the clock checked, its arguments checked before, and its result after."""

    signature = _signature(func)
    first = next(iter(signature.parameters), "") if signature is not None else ""
    # Jinja's async-capable filters report the wrapped function's signature, without the context
    # parameter it is called with: skip that argument to bind the others by name.
    skip = 1 if _PassArg.from_obj(func) is not None and first not in _CONTEXT_PARAMETERS else 0

    @functools.wraps(func)  # keeps jinja_pass_arg: Jinja still passes the context/environment
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        _grow_check(budget, name, _args(func, args[skip:], kwargs))
        return budget.check(func(*args, **kwargs))

    return bounded


@jinja2.pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    budget = _budget()
    items = _materialize(budget, value)
    budget.allow(sum(estimate(i, budget) for i in items) + len(_text(d)) * len(items))
    join = jinja2.filters.sync_do_join
    return join(eval_ctx, items, d, attribute)


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    budget = _budget()
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    items = _materialize(budget, iterable)
    if not isinstance(start, list | tuple):
        return sum(items, start)
    total = list(start)  # lists add up in linear time, not the quadratic time of sum()
    for item in items:
        budget.tick()
        total.extend(item)
    return total if isinstance(start, list) else tuple(total)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _grow_check(_budget(), "lipsum", {"n": n, "max": max})
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.tick()
        yield item


def _concat(*parts: Any) -> str:
    budget = _budget()
    budget.allow(sum(estimate(p, budget) for p in parts))
    join = markup_join if any(isinstance(p, Markup) for p in parts) else str_join
    return join(parts)


class _Splice(NodeTransformer):
    """Routes every for loop's iterable and every ``~`` through the budgeted hooks."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _hook(_ITER, [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _hook(_CONCAT, list(node.nodes), node.lineno)


def _hook(name: str, args: list[Any], lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.Name(name, "load", lineno=lineno), args, [], None, None, lineno=lineno)
    return call


# --- templates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One parsed template value."""

    source: str
    references: References
    _render: Callable[[Mapping[str, Any]], Any]
    limits: TemplateLimits = TemplateLimits()

    def render(self, context: Mapping[str, Any]) -> Any:
        """The value for ``context``; raises TemplateProblem with a readable message."""
        shown = shorten(self.source)
        token = _CURRENT.set(_Budget(self.limits))
        try:
            value = self._render(context)
        except jinja2.UndefinedError as exc:
            raise TemplateProblem(f"undefined value in '{shown}': {exc.message}") from exc
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise TemplateProblem(f"cannot render '{shown}': {exc}") from exc
        except RecursionError as exc:
            raise TemplateProblem(f"cannot render '{shown}': it recurses too deeply") from exc
        except MemoryError as exc:
            raise TemplateProblem(f"cannot render '{shown}': out of memory") from exc
        except Exception as exc:  # anything else a hostile template provokes: no traceback
            raise TemplateProblem(f"cannot render '{shown}': {type(exc).__name__}: {exc}") from exc
        finally:
            _CURRENT.reset(token)
        if isinstance(value, jinja2.Undefined):
            reason = value._undefined_message  # the same text StrictUndefined raises with
            raise TemplateProblem(f"undefined value in '{shown}': {reason}")
        return value


def shorten(source: str, limit: int = 100) -> str:
    """A template's text as messages quote it: on one line, long ones cut."""
    source = source.replace("\n", "\\n")
    return source if len(source) <= limit else f"{source[: limit - 3]}..."


def is_template(value: object) -> bool:
    """Whether ``value`` is a string holding Jinja2 syntax."""
    return isinstance(value, str) and any(m in value for m in _MARKERS)


class Templates:
    """The bounded, sandboxed Jinja2 environment shared by all templates of a run."""

    def __init__(
        self,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        *,
        limits: TemplateLimits | None = None,
    ) -> None:
        self.limits = limits or TemplateLimits()
        self.env = _BoundedEnvironment()
        self.env.globals.update(functions or {})

    def parse(self, source: str) -> Template:
        """Parse ``source``; raises TemplateProblem on a syntax error or a template too large to run."""
        shown = shorten(source)
        if len(source) > self.limits.max_source_chars:
            raise TemplateProblem(
                f"the template '{shown}' is {len(source):,} characters, over the limit of "
                f"{self.limits.max_source_chars:,}"
            )
        try:
            tree = self.env.parse(source)
            references = find_references(tree)
            chain = _lookup_chain(tree)
            render: Callable[[Mapping[str, Any]], Any]
            if chain is not None:  # {{ steps.a.output[1] }}: looked up directly, nothing to compile
                render = functools.partial(self._look_up, *chain)
            elif "{%" in source or len(source) > _EAGER_CHARS:
                render = self._compile(tree)
            else:  # a short {{ expression }}: compiled when first rendered (planning 10,000 steps is quick)
                render = _lazy(functools.partial(self._compile, tree))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error in '{shown}': {exc.message}") from exc
        except (RecursionError, MemoryError, SyntaxError) as exc:
            raise TemplateProblem(f"the template '{shown}' nests too deeply to be compiled") from exc
        except Exception as exc:  # no traceback for any template, however hostile
            raise TemplateProblem(f"cannot compile the template '{shown}': {exc}") from exc
        return Template(source, references, render, self.limits)

    def _look_up(self, name: str, links: list[tuple[bool, Any]], context: Mapping[str, Any]) -> Any:
        """What the compiled template would compute for a lookup chain, with the same sandbox calls."""
        if name in context:
            value = context[name]
        elif name in self.env.globals:
            value = self.env.globals[name]
        else:
            value = self.env.undefined(name=name)
        for is_attribute, key in links:
            value = self.env.getattr(value, key) if is_attribute else self.env.getitem(value, key)
        return value

    def _compile(self, tree: nodes.Template) -> Callable[[Mapping[str, Any]], Any]:
        expression = lone_expression(tree)
        if expression is not None:
            # {% set kkiai_value = <expression> %}: the module then holds the expression's native value.
            target = nodes.Name(_VALUE, "store", lineno=1)
            tree = nodes.Template([nodes.Assign(target, expression, lineno=1)], lineno=1)
        tree = _Splice().visit(tree)
        tree.set_environment(self.env)
        template = self.env.from_string(tree)
        if expression is not None:
            return lambda ctx: getattr(template.make_module(dict(ctx)), _VALUE)
        return lambda ctx: _render_text(template, ctx)


_EAGER_CHARS = 200  # longer templates are compiled at once, so that one too complex fails in planning


def _lazy(compile_: Callable[[], Callable[[Mapping[str, Any]], Any]]) -> Callable[[Mapping[str, Any]], Any]:
    compiled: list[Callable[[Mapping[str, Any]], Any]] = []

    def render(context: Mapping[str, Any]) -> Any:
        if not compiled:
            compiled.append(compile_())
        return compiled[0](context)

    return render


def _render_text(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    budget = _budget()
    chunks = []
    size = 0
    for chunk in template.generate(**context):
        size += len(chunk)
        budget.allow(size, "the rendered text")
        budget.tick()
        chunks.append(chunk)
    return "".join(chunks)


def _lookup_chain(tree: nodes.Template) -> tuple[str, list[tuple[bool, Any]]] | None:
    """``{{ name.attr['key'][0] }}`` as (name, [(is attribute, key), ...]); None for anything else.

    Most templates are such chains; looking them up directly spares compiling each one to Python,
    which dominated planning a pipeline of thousands of steps.
    """
    node = lone_expression(tree)
    links: list[tuple[bool, Any]] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            links.append((True, node.attr))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            links.append((False, node.arg.value))
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name) or node.ctx != "load":
        return None
    return node.name, links[::-1]


def lone_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The expression if the template is exactly one ``{{ ... }}`` (whitespace around it allowed)."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [n for n in tree.body[0].nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    return parts[0]


def find_references(tree: nodes.Template) -> References:
    """Walk the syntax tree for ``steps.<id>`` / ``steps['<id>']`` and ``params.<key>`` chains."""
    steps: set[str] = set()
    params: set[str] = set()
    if any(isinstance(node, nodes.Stmt) for node in tree.body if not isinstance(node, nodes.Output)):
        names = meta.find_undeclared_variables(tree)  # scoping (loops, set, macros): Jinja's own analysis
    else:  # only {{ ... }}: expressions declare nothing, every name read is undeclared (and much quicker)
        env_globals = getattr(getattr(tree, "environment", None), "globals", {})
        names = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load" and n.name not in env_globals}
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
