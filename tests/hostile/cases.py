"""The hostile corpus: pipeline files, templates and file() calls built to hang, exhaust or crash the tool.

Each Case is written into a fresh folder as ``pipelines/<id>.yaml`` (plus any extra files, links and
FIFOs) and run with the real ``kkiai-run``; every one must exit 2 with the exact problem line, no
traceback and no request. ``{file}`` in an expected line stands for the pipeline file, ``{dir}`` for its
folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    """One bad input and the line kkiai-run must print for it."""

    id: str
    pipeline: str | bytes | None = None
    expect: str = ""  # the problem line, after "  - "
    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # name -> target ({dir} = the folder)
    fifos: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # extra arguments


def step(value: str, *, model: str = "stability-ai/sdxl", name: str = "prompt", params: str = "{}") -> str:
    """A one-step pipeline whose input ``name`` is ``value`` (written as a YAML double-quoted string)."""
    return (
        f"name: p\nparams: {params}\nsteps:\n  a:\n    model: {model}\n"
        f"    input: {{{name}: {json.dumps(value)}}}\n"
    )


def image(value: str, params: str = "{}") -> str:
    """A one-step rembg pipeline whose image is ``value``."""
    return step(value, model="cjwbw/rembg", name="image", params=params)


def short(source: str, limit: int = 100) -> str:
    source = source.replace("\n", "\\n")
    return source if len(source) <= limit else f"{source[: limit - 3]}..."


def rendering(source: str, reason: str, field: str = "input.prompt") -> str:
    return f"{{file}}, step 'a', field '{field}': cannot render '{short(source)}': {reason}"


SIZE = "the result would be more than 2,000,000 characters (the size budget)"
TIME = "rendering took longer than 2 s (the time budget)"
DIGITS = "a number of more than 4,000 digits"
LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" if i else 'l0: &l0 ["lol", "lol", "lol", "lol"]\n'
    for i in range(10)
)
BIG_PARAMS = '{big: "' + "x" * 1000 + '", l: [' + ", ".join(str(i) for i in range(1000)) + "]}"


def _template_cases() -> list[Case]:
    t: list[tuple[str, str, str]] = [  # id, template, reason
        (
            "lipsum_huge",
            "{{ lipsum(10**7) }}",
            "lipsum(n) x 1000 (at most 100 paragraphs) 10,000,000,000 is over the limit of 100,000",
        ),
        (
            "lipsum_wide",
            "{{ lipsum(n=50, max=10**9) }}",
            "the lorem ipsum would be more than 2,000,000 characters (the size budget)",
        ),
        ("power_tower", "{{ 10**(10**10) }}", DIGITS),
        ("power_big", "{{ (2**100000)**2 }}", DIGITS),
        ("int_20000_digits_in_text", "x{{ 10**20000 }}", DIGITS),
        (
            "nested_ranges",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            TIME,
        ),
        (
            "nested_param_loops",
            "{% for a in params.l %}{% for b in params.l %}{% for c in params.l %}{{ a }}{% endfor %}{% endfor %}{% endfor %}",
            TIME,
        ),
        ("repeat_10_10", "{{ 'a'*10**10 }}", SIZE),
        ("repeat_10_9", "{{ 'a'*10**9 }}", SIZE),
        ("repeat_list", "{{ params.l * 10**6 }}", SIZE),
        ("repeat_reversed", "{{ 10**9 * 'ab' }}", SIZE),
        ("recursive_macro", "{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}", "it recurses too deeply"),
        (
            "recursive_loop",
            "{% for i in range(10) recursive %}{{ loop([i]) }}{% endfor %}",
            "it recurses too deeply",
        ),
        (
            "doubling_namespace",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            SIZE,
        ),
        (
            "doubling_plus",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
            SIZE,
        ),
        ("concat_three_megabytes", "{% set x = 'a' * 10**6 %}{{ x ~ x ~ x }}", SIZE),
        ("fromkeys_shared", "{{ dict.fromkeys(range(100000), 'x' * 1000) }}", SIZE),
        (
            "format_width",
            "{{ '{:>999999999}'.format(1) }}",
            "a format width would be more than 2,000,000 characters (the size budget)",
        ),
        (
            "format_nested_width",
            "{{ '{:>{}}'.format(1, 10**9) }}",
            "a format width taken from the arguments is not allowed in templates",
        ),
        (
            "format_precision",
            "{{ '{:.999999999f}'.format(1.5) }}",
            "a format width would be more than 2,000,000 characters (the size budget)",
        ),
        (
            "printf_width",
            "{{ '%999999999d' % 1 }}",
            "a % format width would be more than 2,000,000 characters (the size budget)",
        ),
        (
            "printf_star",
            "{{ '%*d'|format(10**9, 1) }}",
            "a '*' width or precision in a % format is not allowed in templates",
        ),
        ("ljust", "{{ 'a'.ljust(10**10) }}", SIZE),
        ("zfill", "{{ '1'.zfill(10**9) }}", SIZE),
        ("center_filter", "{{ 'a'|center(10**10) }}", SIZE),
        (
            "to_bytes",
            "{{ (10).to_bytes(10**10, 'big') }}",
            "the bytes would be more than 2,000,000 characters (the size budget)",
        ),
        ("expandtabs", "{{ ('\t'*1000).expandtabs(10**6) }}", SIZE),
        ("join_separator", "{{ range(10**5)|list|join('x'*10**6) }}", SIZE),
        ("str_join_separator", "{{ ('x'*10**6).join(range(10)|map('string')) }}", SIZE),
        ("replace_filter", "{{ params.big|replace('x', 'y'*100000) }}", SIZE),
        ("replace_method", "{{ params.big.replace('x', 'y'*100000) }}", SIZE),
        ("replace_empty", "{{ params.big|replace('', 'y'*10000) }}", SIZE),
        ("indent", "{{ ((params.big ~ '\n')*1000)|indent(10**6) }}", SIZE),
        ("wordwrap", "{{ params.big|wordwrap(1, wrapstring='z'*10000) }}", SIZE),
        ("translate", "{{ params.big.translate({120: 'y'*10**4}) }}", SIZE),
        (
            "batch",
            "{{ params.l|batch(10**9, 'x')|list }}",
            "batch() 1,000,000,000 is over the limit of 100,000",
        ),
        ("slice", "{{ params.l|slice(10**9)|list }}", "slice() 1,000,000,000 is over the limit of 100,000"),
        (
            "tojson_indent",
            "{{ params.l|tojson(indent=10**8) }}",
            "tojson(indent=...) x 10,000 1,000,000,000,000 is over the limit of 100,000",
        ),
        (
            "range_huge",
            "{{ range(10**9)|list }}",
            "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
        ),
        ("division_by_zero", "{{ 1/0 }}", "division by zero"),
        ("split_empty", "{{ params.big.split('') }}", "empty separator"),
        (
            "class_attr",
            "{{ ''.__class__.__mro__ }}",
            "access to attribute '__class__' of 'str' object is unsafe.",
        ),
        (
            "format_attr",
            "{{ '{0.__class__}'.format(1) }}",
            "access to attribute '__class__' of 'int' object is unsafe.",
        ),
        (
            "globals_escape",
            "{{ cycler.__init__.__globals__ }}",
            "access to attribute '__init__' of 'type' object is unsafe.",
        ),
        ("include", "{% include '/etc/passwd' %}", "no loader for this environment specified"),
        ("extends", "{% extends '/etc/passwd' %}", "no loader for this environment specified"),
        ("import", "{% import '/etc/passwd' as x %}{{ x }}", "no loader for this environment specified"),
        (
            "list_mutation",
            "{{ params.l.append(1) }}",
            "access to attribute 'append' of 'list' object is unsafe.",
        ),
    ]
    cases = [Case(f"tpl_{i}", step(src, params=BIG_PARAMS), rendering(src, reason)) for i, src, reason in t]
    deep = "{{ " + "(" * 500 + "1" + ")" * 500 + " }}"
    loops = "{% for i in range(3) %}" * 25 + "x" + "{% endfor %}" * 25
    long = "{{ x }}" * 20000
    cases += [
        Case(
            "tpl_deep_parentheses",
            step(deep),
            f"{{file}}, step 'a', field 'input.prompt': the template '{short(deep)}' nests too deeply to be compiled",
        ),
        Case(
            "tpl_deep_loops",
            step(loops),
            f"{{file}}, step 'a', field 'input.prompt': the template '{short(loops)}' nests too deeply to be compiled",
        ),
        Case(
            "tpl_too_long",
            step(long),
            f"{{file}}, step 'a', field 'input.prompt': the template '{short(long)}' is 140,000 characters, over the limit of 100,000",
        ),
        Case(
            "tpl_prompt_of_a_megabyte",
            step("{{ 'a' * 10**6 }}"),
            "{file}, step 'a', field 'input.prompt': prompt is 1,000,000 characters long; text inputs are limited to 100,000",
        ),
        Case(
            "literal_prompt_of_two_megabytes",
            step("a" * 2_000_000),
            "{file}, step 'a', field 'input.prompt': prompt is 2,000,000 characters long; text inputs are limited to 100,000",
        ),
        Case(
            "tpl_items_is_the_users_list",
            step("{{ params.items }}", params="{items: [1, 2]}"),
            "{file}, step 'a', field 'input.prompt': prompt must be a string, got a list",
        ),
        Case(
            "tpl_keys_unknown_param",
            step("{{ params.keys }}"),
            "{file}, step 'a', field 'input.prompt': reference to unknown param 'keys'",
        ),
        Case(
            "tpl_whitespace_control_native",
            step("{{- params.n -}}", params="{n: 7}"),
            "{file}, step 'a', field 'input.prompt': prompt must be a string, got 7 (an integer); quote it in YAML",
        ),
        Case(
            "tpl_syntax_unclosed_for",
            step("{% for x in params.l %}{{ x }}"),
            "{file}, step 'a', field 'input.prompt': template syntax error in '{% for x in params.l %}{{ x }}': Unexpected end of template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'.",
        ),
    ]
    return cases


def _file_cases() -> list[Case]:
    def f(src: str) -> str:
        return image("{{ file(" + src + ") }}")

    def line(src: str, reason: str) -> str:
        return rendering("{{ file(" + src + ") }}", f"file({reason}", field="input.image")

    outside = "is outside the pipeline's folder {dir}; add its directory to allowed_dirs to use it"
    return [
        Case(
            "file_etc_passwd",
            f("'/etc/passwd'"),
            line("'/etc/passwd'", f"'/etc/passwd'): /etc/passwd {outside}"),
        ),
        Case(
            "file_etc_shadow",
            f("'/etc/shadow'"),
            line("'/etc/shadow'", f"'/etc/shadow'): /etc/shadow {outside}"),
        ),
        Case(
            "file_proc_environ",
            f("'/proc/self/environ'"),
            line("'/proc/self/environ'", f"'/proc/self/environ'): /proc/{{*}}/environ {outside}"),
        ),
        Case(
            "file_dotdot",
            f("'../secret.png'"),
            line("'../secret.png'", f"'../secret.png'): {{parent}}/secret.png {outside}"),
        ),
        Case(
            "file_dotdot_deep",
            f("'assets/../../../../../../etc/hostname'"),
            line(
                "'assets/../../../../../../etc/hostname'",
                f"'assets/../../../../../../etc/hostname'): /etc/hostname {outside}",
            ),
        ),
        Case(
            "file_symlink_out",
            f("'link.png'"),
            line("'link.png'", f"'link.png'): /etc/passwd {outside}"),
            links={"link.png": "/etc/passwd"},
        ),
        Case(
            "file_symlink_dir_out",
            f("'etc/passwd'"),
            line("'etc/passwd'", f"'etc/passwd'): /etc/passwd {outside}"),
            links={"etc": "/etc"},
        ),
        Case(
            "file_fifo",
            f("'pipe.png'"),
            line("'pipe.png'", "'pipe.png'): {dir}/pipe.png is not a regular file"),
            fifos=("pipe.png",),
        ),
        Case(
            "file_directory",
            f("'assets'"),
            line("'assets'", "'assets'): {dir}/assets is not a regular file"),
            dirs=("assets",),
        ),
        Case("file_empty_name", f("''"), line("''", "''): {dir} is not a regular file")),
        Case("file_dev_zero", f("'/dev/zero'"), line("'/dev/zero'", f"'/dev/zero'): /dev/zero {outside}")),
        Case(
            "file_nul_byte",
            f("'a\\x00b'"),
            line("'a\\x00b'", "'a\x00b'): not a usable path (embedded null byte)"),
        ),
        Case(
            "file_not_a_string",
            f("123"),
            rendering("{{ file(123) }}", "file() takes a path string, not 123", field="input.image"),
        ),
        Case(
            "file_too_large",
            f("'big.png'"),
            line(
                "'big.png'",
                "'big.png') is 1,000,001 bytes, over the 1,000,000-byte limit for data: URIs; use an http(s) URL for large files, or raise max_file_bytes",
            ),
            files={"big.png": b"\0" * 1_000_001},
        ),
        Case(
            "file_symlink_to_large",
            f("'ok.png'"),
            line(
                "'ok.png'",
                "'ok.png') is 1,000,001 bytes, over the 1,000,000-byte limit for data: URIs; use an http(s) URL for large files, or raise max_file_bytes",
            ),
            files={"big.bin": b"\0" * 1_000_001},
            links={"ok.png": "{dir}/big.bin"},
        ),
        Case(
            "file_symlink_loop",
            f("'loop.png'"),
            line("'loop.png'", "'loop.png'): not a usable path (Symlink loop from '{dir}/loop.png')"),
            links={"loop.png": "{dir}/loop.png"},
        ),
        Case("file_missing", f("'nope.png'"), line("'nope.png'", "'nope.png'): no such file {dir}/nope.png")),
        Case(
            "file_tilde", f("'~/.bashrc'"), line("'~/.bashrc'", "'~/.bashrc'): no such file {dir}/~/.bashrc")
        ),
        Case(
            "file_in_loop",
            image("{% for i in range(100000) %}{{ file('a.png') }}{% endfor %}"),
            rendering(
                "{% for i in range(100000) %}{{ file('a.png') }}{% endfor %}",
                "the rendered text would be more than 2,000,000 characters (the size budget)",
                field="input.image",
            ),
            files={"a.png": b"\0" * 900_000},
        ),
    ]


def _yaml_cases() -> list[Case]:
    ok_step = "steps:\n  a: {model: cjwbw/rembg, input: {image: 'https://x/y.png'}}\n"
    interp_laughs = (
        "name: p\nparams:\n  x0: aaaaaaaaaa\n"
        + "".join(f"  x{i + 1}: ${{.x{i}}}${{.x{i}}}${{.x{i}}}${{.x{i}}}\n" for i in range(20))
        + ok_step
    )
    chain = (
        "name: p\nparams:\n  x0: a\n" + "".join(f"  x{i + 1}: ${{.x{i}}}\n" for i in range(5000)) + ok_step
    )
    return [
        Case(
            "yaml_error_at_end",
            "name: p\nsteps:\n  a: [\n",
            "{file}:4: YAML syntax error: expected the node content, but found '<stream end>'",
        ),
        Case(
            "yaml_unclosed_mapping_at_end",
            "name: p\nsteps: {a: {model: x\n",
            "{file}:3: YAML syntax error: expected ',' or '}', but got '<stream end>'",
        ),
        Case(
            "yaml_unterminated_quote",
            'name: "p\n' + ok_step,
            "{file}:4: YAML syntax error: found unexpected end of stream",
        ),
        Case(
            "yaml_tab_indent",
            "name: p\nsteps:\n\ta: {}\n",
            "{file}:3: YAML syntax error: found character '\\t' that cannot start any token",
        ),
        Case(
            "yaml_deep_flow",
            "name: p\nparams: {x: " + "[" * 5000 + "]" * 5000 + "}\n" + ok_step,
            "{file}:2: YAML syntax error: nesting deeper than 64 levels",
        ),
        Case(
            "yaml_deep_block",
            "name: p\nparams:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)) + ok_step,
            "{file}:66: YAML syntax error: nesting deeper than 64 levels",
        ),
        Case(
            "yaml_billion_laughs",
            "name: p\n" + LAUGHS + ok_step,
            "{file}:8: YAML syntax error: the document expands to more than 4,000,000 characters (aliases)",
        ),
        Case(
            "yaml_recursive_alias",
            "name: p\nparams: &a {x: *a}\n" + ok_step,
            "{file}:2: YAML syntax error: an alias refers to its own anchor (recursive)",
        ),
        Case(
            "yaml_undefined_alias",
            "name: p\nparams: {x: *nope}\n" + ok_step,
            "{file}:2: YAML syntax error: found undefined alias 'nope'",
        ),
        Case(
            "yaml_five_megabytes",
            "name: p\nparams: {x: '" + "x" * 5_000_000 + "'}\n" + ok_step,
            "{file}: the file is larger than 4,000,000 bytes; a pipeline file is refused above that",
        ),
        Case(
            "yaml_duplicate_step",
            "name: p\nsteps:\n  a: {model: cjwbw/rembg}\n  a: {model: cjwbw/rembg}\n",
            "{file}:4: YAML syntax error: duplicate key 'a' (first on line 3)",
        ),
        Case(
            "yaml_duplicate_top_key",
            "name: p\nname: q\n" + ok_step,
            "{file}:2: YAML syntax error: duplicate key 'name' (first on line 1)",
        ),
        Case(
            "yaml_duplicate_input_key",
            "name: p\nsteps:\n  a:\n    model: stability-ai/sdxl\n    input: {prompt: a, prompt: b}\n",
            "{file}:5: YAML syntax error: duplicate key 'prompt' (first on line 5)",
        ),
        Case(
            "yaml_int_5000_digits",
            "name: p\nparams: {n: " + "9" * 5000 + "}\n" + ok_step,
            "{file}:2: YAML syntax error: cannot read the integer: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit",
        ),
        Case(
            "yaml_binary_int_huge",
            "name: p\nparams: {n: 0b" + "1" * 20000 + "}\n" + ok_step,
            "{file}:2: YAML syntax error: the integer has more than 4,000 digits",
        ),
        Case(
            "yaml_set",
            "name: p\nparams: {x: !!set {a}}\n" + ok_step,
            "{file}:2: YAML syntax error: the YAML type tag:yaml.org,2002:set is not supported in a pipeline file",
        ),
        Case(
            "yaml_binary",
            "name: p\nparams: {x: !!binary aGVsbG8=}\n" + ok_step,
            "{file}:2: YAML syntax error: the YAML type tag:yaml.org,2002:binary is not supported in a pipeline file",
        ),
        Case(
            "yaml_python_object",
            "name: p\nparams: {x: !!python/object/apply:os.system [id]}\n" + ok_step,
            "{file}:2: YAML syntax error: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        Case(
            "yaml_unknown_tag",
            "name: p\nparams: {x: !foo bar}\n" + ok_step,
            "{file}:2: YAML syntax error: could not determine a constructor for the tag '!foo'",
        ),
        Case(
            "yaml_int_key",
            "name: p\nsteps:\n  1: {model: cjwbw/rembg}\n",
            "{file}:3: YAML syntax error: the key '1' is not a string (quote it)",
        ),
        Case(
            "yaml_bool_key",
            "name: p\nparams: {on: 1}\n" + ok_step,
            "{file}:2: YAML syntax error: the key 'on' is not a string (quote it)",
        ),
        Case(
            "yaml_null_key",
            "name: p\nparams: {~: 1}\n" + ok_step,
            "{file}:2: YAML syntax error: the key '~' is not a string (quote it)",
        ),
        Case(
            "yaml_nul_byte",
            b"name: p\x00\n",
            "{file}:1: YAML syntax error: unacceptable character #x0000: special characters are not allowed",
        ),
        Case("yaml_latin1", b"name: caf\xe9\n", "{file}:1: not UTF-8 text (byte 0xe9)"),
        Case(
            "yaml_two_documents",
            "name: p\n---\nname: q\n",
            "{file}:2: YAML syntax error: expected a single document in the stream, but found another document",
        ),
        Case(
            "yaml_directive",
            "%YAML 2.0\n---\nname: p\n",
            "{file}:1: YAML syntax error: found incompatible YAML document (version 1.* is required)",
        ),
        Case(
            "yaml_bad_date",
            "name: p\nsteps:\n  a: {model: stability-ai/sdxl, input: {prompt: x, seed: 2001-13-45}}\n",
            "{file}, step 'a', field 'input.seed': seed must be an integer, got the string '2001-13-45'",
        ),
        Case(
            "yaml_scalar_document",
            "just a string\n",
            "{file}: a pipeline file must be a mapping (name, params, steps)",
        ),
        Case("yaml_empty_file", "", "{file}, field 'steps': 'steps' must be a non-empty mapping of step ids"),
        Case(
            "interp_laughs",
            interp_laughs,
            "{file}, field 'params.x9': the interpolations expand to more than 4,000,000 characters",
        ),
        Case(
            "interp_cycle",
            "name: p\nparams: {a: '${.b}', b: '${.a}'}\n" + ok_step,
            "{file}, field 'params.b': an interpolation refers back to itself",
        ),
        Case("interp_chain", chain, "{file}, field 'params.x17': interpolations chain more than 16 deep"),
        Case(
            "interp_syntax",
            "name: p\nparams: {a: '${foo'}\n" + ok_step,
            "{file}, field 'params.a': invalid ${...} interpolation: no viable alternative at input '${foo'",
        ),
        Case(
            "interp_missing_key",
            "name: p\nparams: {a: '${.nope}'}\n" + ok_step,
            "{file}: cannot resolve the pipeline config: Interpolation key 'nope' not found",
        ),
        Case(
            "defaults_list",
            "name: p\ndefaults: [{override /api: kkiai}]\n" + ok_step,
            "{file}, field 'defaults': unknown key 'defaults' (a pipeline has: name, description, params, steps)",
        ),
        Case(
            "long_key",
            "name: p\n" + "k" * 1000 + ": 1\n" + ok_step,
            "{file}, field '"
            + "k" * 57
            + "...': unknown key '"
            + "k" * 57
            + "...' (a pipeline has: name, description, params, steps)",
        ),
        Case(
            "cycle_2000",
            "name: p\nsteps:\n"
            + "".join(
                f"  s{i}: {{model: cjwbw/rembg, input: {{image: '{{{{ steps.s{(i + 1) % 2000}.output }}}}'}}}}\n"
                for i in range(2000)
            ),
            "{file}, step 's0': dependency cycle: s0 → s1 → s2 → s3 → s4 → s5 → s6 → s7 → … (1985 more) … → s1993 → s1994 → s1995 → s1996 → s1997 → s1998 → s1999 → s0",
        ),
        Case(
            "needs_cycle",
            "name: p\nsteps:\n  a: {model: cjwbw/rembg, input: {image: 'https://x/y.png'}, needs: [b]}\n  b: {model: cjwbw/rembg, input: {image: 'https://x/y.png'}, needs: [a]}\n",
            "{file}, step 'a': dependency cycle: a → b → a",
        ),
    ]


def _special_file_cases() -> list[Case]:
    return [
        Case("pipeline_fifo", None, "{file}: not a regular file", fifos=("{id}.yaml",)),
        Case("pipeline_directory", None, "{file}: not a regular file", dirs=("{id}.yaml",)),
        Case(
            "pipeline_symlink_loop",
            None,
            "{file}: cannot read the file: Too many levels of symbolic links",
            links={"{id}.yaml": "{dir}/{id}.yaml"},
        ),
        Case(
            "pipeline_broken_symlink",
            None,
            "{dir}/nowhere.yaml: cannot read the file: No such file or directory",
            links={"{id}.yaml": "{dir}/nowhere.yaml"},
        ),
    ]


CASES: list[Case] = [*_template_cases(), *_file_cases(), *_yaml_cases(), *_special_file_cases()]
