"""``kkiai-models``: the supported models and their inputs, as the validator sees them.

::

    kkiai-models                       a table of the supported models
    kkiai-models stability-ai/sdxl     one model (any reference form): its version and every input
    kkiai-models --json [MODEL]        the same data as JSON
    kkiai-models owner/name:<version>  a model outside the catalog, its schema fetched from the API
                                       (KKIAI_API_TOKEN; --base-url URL), --cog URL (a Cog server) or
                                       --sandbox (the emulator's generic stand-in); kept in the cache

"Required" and the allowed ranges include the rules ``validation`` adds to the schemas (e.g. a prompt
for stable-diffusion, sdxl width/height 128..1536 in steps of 8). Errors are one line on stderr, never
a traceback: an unknown model exits with status 2 and a did-you-mean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .api.client import ClientOptions
from .catalog import InputSpec, ModelSpec, default_catalog
from .errors import ConfigError, KkiaiError
from .execution import ExecutionOptions
from .modelschema import parse_ref
from .paths import shipped_dir
from .schemacache import fetch_model
from .secrets import register
from .settings import SANDBOX_TOKEN, ApiSettings, CogSettings, Settings, check_secure, default_cache_dir
from .terminal import columns, write_stdout
from .validation import bounds, multiple_of, required_inputs

Fetch = Callable[[str], ModelSpec]

SHORT_HASH = 8
DEFAULT_WIDTH = 32


def main(argv: list[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run ``kkiai-models``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    env = os.environ if environ is None else environ
    try:
        text = render(args.model, as_json=args.json, fetch=lambda ref: _fetch(ref, args, env))
    except KkiaiError as exc:
        print(f"kkiai-models: {exc}", file=sys.stderr)
        return exc.exit_code
    return write_stdout(text)


def render(ref: str | None, *, as_json: bool = False, fetch: Fetch | None = None) -> str:
    """The text ``kkiai-models [ref]`` prints; raises UnknownModelError for an unknown ``ref``. A
    ``owner/name:<version>`` outside the catalog is shown as ``fetch`` describes it."""
    catalog = default_catalog()
    if ref is None:
        rows = [model_summary(m) for m in catalog]
        return json.dumps(rows, indent=2) if as_json else _list_text(rows)
    outside = fetch is not None and parse_ref(ref) is not None and not catalog.curated(ref)
    model = fetch(ref) if fetch is not None and outside else catalog.resolve(ref)
    details = model_details(model)
    return json.dumps(details, indent=2) if as_json else _model_text(details)


def model_summary(model: ModelSpec) -> dict[str, Any]:
    """One row of the model list."""
    return {
        "model": model.ref,
        "version": model.version,
        "version_ref": model.version_ref,
        "output": model.output_kind,
        "required": required_inputs(model),
    }


def model_details(model: ModelSpec) -> dict[str, Any]:
    """Everything ``kkiai-models MODEL`` shows about one model."""
    inputs = [input_details(model, spec) for spec in model.inputs.values()]
    extra = {"output_note": model.output_note, "confidence": model.confidence, "inputs": inputs}
    return model_summary(model) | extra


def input_details(model: ModelSpec, spec: InputSpec) -> dict[str, Any]:
    """One input: its schema plus what the validator enforces (bounds, step, required)."""
    low, high = bounds(model, spec.name)
    return {
        "name": spec.name,
        "type": spec.type,
        "default": spec.default,
        "has_default": spec.has_default,
        "minimum": low,
        "maximum": high,
        "multiple_of": multiple_of(model, spec.name),
        "choices": list(spec.choices) if spec.choices is not None else None,
        "allowed_items": list(spec.allowed_items) if spec.allowed_items is not None else None,
        "required": spec.name in required_inputs(model),
        "file": spec.is_file,
        "description": spec.description,
    } | ({"items": spec.items} if spec.items else {})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kkiai-models", description="List the supported models, or show one model's inputs."
    )
    parser.add_argument("model", nargs="?", help="owner/name, owner/name:<version> or a version hash")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    where = parser.add_argument_group(
        "models outside the catalog (owner/name:<version>)", "where the schema is fetched from (then cached)"
    )
    where.add_argument(
        "--base-url", help="the API (default: the shipped api=kkiai); token from KKIAI_API_TOKEN"
    )
    where.add_argument("--allow-insecure-http", action="store_true", help="allow a plain-http API elsewhere")
    where.add_argument("--cog", metavar="URL", help="a Cog server running the model (GET URL/openapi.json)")
    where.add_argument("--sandbox", action="store_true", help="the offline emulator's generic stand-in")
    where.add_argument("--cache-dir", help="where schemas are kept (default: kkiai-run's cache directory)")
    return parser


def _fetch(ref: str, args: argparse.Namespace, environ: Mapping[str, str]) -> ModelSpec:
    """The model fetched as the options say (the token only from the environment, only to the API)."""
    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir(environ)
    options = ClientOptions()
    cog = CogSettings()
    if args.cog:
        _http_url("--cog", args.cog)
        api = ApiSettings("cog", None, None, options)
        cog = CogSettings(servers={ref.partition(":")[0]: args.cog})
    elif args.sandbox:
        api = ApiSettings("sandbox", None, SANDBOX_TOKEN, options)
    else:
        base_url = args.base_url or _shipped_base_url()
        _http_url("--base-url", base_url)
        if not args.allow_insecure_http:
            check_secure(base_url)
        token = environ.get("KKIAI_API_TOKEN", "").strip() or None
        register(token)
        api = ApiSettings("kkiai", base_url, token, options)
    settings = Settings(
        api=api,
        execution=ExecutionOptions(),
        progress=False,
        run_dir=Path.cwd(),
        cache_dir=cache_dir,
        cog=cog,
    )
    return fetch_model(ref, settings, backend="cog" if args.cog else "api")


def _http_url(option: str, url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{option} must be an http(s) URL, not {url!r}")


def _shipped_base_url() -> str:
    conf = yaml.safe_load((shipped_dir("conf") / "api" / "kkiai.yaml").read_text("utf-8"))
    return str(conf["base_url"])


def _list_text(rows: Sequence[dict[str, Any]]) -> str:
    header = ["MODEL", "VERSION", "OUTPUT", "REQUIRED INPUTS"]
    body = [
        [r["model"], r["version"][:SHORT_HASH], r["output"], ", ".join(r["required"]) or "-"] for r in rows
    ]
    return columns([header, *body])


def _model_text(details: dict[str, Any]) -> str:
    head = [
        details["version_ref"],
        f"output: {details['output']}; {details['output_note']}",
        f"confidence: {details['confidence']}",
        "",
    ]
    header = ["INPUT", "TYPE", "REQUIRED", "FILE", "DEFAULT", "ALLOWED"]
    body = [
        [i["name"], _type(i), _yes(i["required"]), _yes(i["file"]), _default(i), _allowed(i)]
        for i in details["inputs"]
    ]
    return "\n".join(head) + "\n" + columns([header, *body])


def _type(item: dict[str, Any]) -> str:
    return f"array[{item['items']}]" if item.get("items") else str(item["type"])


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def _default(item: dict[str, Any]) -> str:
    if not item["has_default"]:
        return "-"
    text = json.dumps(item["default"])
    return text if len(text) <= DEFAULT_WIDTH else text[: DEFAULT_WIDTH - 4] + '..."'


def _allowed(item: dict[str, Any]) -> str:
    if item["choices"] is not None:
        return ", ".join(str(c) for c in item["choices"])
    if item["allowed_items"] is not None:
        return "comma-separated, no spaces: " + ", ".join(item["allowed_items"])
    low, high, step = item["minimum"], item["maximum"], item["multiple_of"]
    if low is not None and high is not None:
        text = f"{_num(low)}..{_num(high)}"
    elif low is not None or high is not None:
        text = f">= {_num(low)}" if high is None else f"<= {_num(high)}"
    else:
        text = ""
    return f"{text}, multiple of {step}" if step else text


def _num(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
