"""Integration tests: the real ``kkiai-run`` command in a subprocess against the sandbox on loopback."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .integration import SCRIPTS, TOKEN, Result, kkiai_run


def write_pipeline(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def check_artifacts(result: Result, step: str) -> list[Path]:
    paths = []
    for artifact in result.manifest["steps"][step]["outputs"]:
        path = result.run_dir / artifact["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert len(data) == artifact["bytes"]
        paths.append(path)
    return paths


def test_hydra_verbose_puts_debug_lines_in_run_log(tmp_path: Path) -> None:
    quiet = kkiai_run(
        "pipeline=product_shots", "api=sandbox", cwd=tmp_path, run_dir=tmp_path / "a", token=None
    )
    verbose = kkiai_run(
        "pipeline=product_shots",
        "api=sandbox",
        "hydra.verbose=kkiai_pipeline",
        "cache=false",  # so that it sends requests
        cwd=tmp_path,
        run_dir=tmp_path / "b",
        token=None,
    )
    assert quiet.code == verbose.code == 0, verbose.stderr
    assert " DEBUG " not in (quiet.run_dir / "run.log").read_text()
    assert re.search(
        r" DEBUG kkiai_pipeline\.api\.client: POST /predictions -> 20\d",
        (verbose.run_dir / "run.log").read_text(),
    )


def test_product_shots_on_the_embedded_sandbox(tmp_path: Path) -> None:
    result = kkiai_run("pipeline=product_shots", "api=sandbox", cwd=tmp_path, token=None)
    assert result.code == 0, result.stderr
    manifest = result.manifest
    assert manifest["status"] == "succeeded"
    assert manifest["pipeline"] == "product_shots"
    assert manifest["api"]["kind"] == "sandbox"
    assert [s["status"] for s in manifest["steps"].values()] == ["succeeded"] * 3
    generate = manifest["steps"]["generate"]
    assert generate["model"] == "stability-ai/sdxl"
    assert generate["version"] == "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
    assert generate["prediction_id"]
    assert generate["input"]["prompt"] == "studio photo of a ceramic mug on white marble, soft light"
    shots = check_artifacts(result, "generate")
    assert [p.name for p in shots] == ["output_0.png", "output_1.png"]
    with Image.open(shots[0]) as image:
        assert image.size == (1024, 1024)
    cleanup = manifest["steps"]["cleanup"]
    assert cleanup["input"]["image_path"] == generate["outputs"][1]["url"]
    (cutout,) = check_artifacts(result, "cutout")
    with Image.open(cutout) as image:
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0))[3] == 0  # the plain background is gone
    log = (result.run_dir / "run.log").read_text()
    assert f"created prediction {generate['prediction_id']}" in log
    assert "downloaded" in log
    assert (result.run_dir / ".hydra" / "config.yaml").is_file()
    assert "cutout" in result.stderr and "run succeeded" in result.stderr


def test_a_failed_step_skips_its_dependents_only(tmp_path: Path, sandbox: Any, api: list[str]) -> None:
    write_pipeline(
        tmp_path / "pipelines",
        "fails",
        """
        name: fails
        steps:
          broken:
            model: stability-ai/stable-diffusion
            input: {prompt: "a mug [sandbox:fail]", width: 256, height: 256}
          after:
            model: cjwbw/rembg
            input: {image: "{{ steps.broken.output[0] }}"}
          later:
            model: cjwbw/rembg
            input: {image: "{{ steps.after.output }}"}
          independent:
            model: stability-ai/stable-diffusion
            input: {prompt: "a vase", width: 256, height: 256}
        """,
    )
    result = kkiai_run("pipeline=fails", *api, cwd=tmp_path)
    assert result.code == 1
    steps = result.manifest["steps"]
    assert {k: v["status"] for k, v in steps.items()} == {
        "broken": "failed",
        "after": "skipped",
        "later": "skipped",
        "independent": "succeeded",
    }
    assert "E1000" in steps["broken"]["error"]
    assert steps["after"]["error"] == "skipped: dependency 'broken' did not succeed"
    assert steps["after"]["prediction_id"] is None
    assert result.manifest["status"] == "failed"
    check_artifacts(result, "independent")


def test_missing_token_is_a_usage_error_and_sends_nothing(
    tmp_path: Path, sandbox: Any, api: list[str]
) -> None:
    before = sandbox.stats()["requests"]
    result = kkiai_run("pipeline=product_shots", *api, cwd=tmp_path, token=None)
    assert result.code == 2
    assert "KKIAI_API_TOKEN is not set" in result.stderr
    assert "api=sandbox" in result.stderr
    assert "Traceback" not in result.stderr
    assert sandbox.stats()["requests"] == before


def test_overrides_of_params_and_step_inputs(tmp_path: Path, api: list[str]) -> None:
    result = kkiai_run(
        "pipeline=product_shots",
        *api,
        "pipeline.params.subject=a blue mug",
        "pipeline.steps.generate.input.guidance_scale=9",
        "pipeline.steps.generate.input.num_outputs=3",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    sent = result.manifest["steps"]["generate"]["input"]
    assert sent["prompt"] == "studio photo of a blue mug on white marble, soft light"
    assert sent["guidance_scale"] == 9
    assert sent["num_outputs"] == 3
    assert len(check_artifacts(result, "generate")) == 3


PIPELINE = """
name: {name}
steps:
  only:
    model: stability-ai/stable-diffusion
    input: {{prompt: "{prompt}", width: 128, height: 128}}
"""


def test_pipelines_from_the_path_variable_then_cwd_then_shipped(tmp_path: Path, api: list[str]) -> None:
    extra = tmp_path / "extra"
    write_pipeline(extra, "mine", PIPELINE.format(name="mine", prompt="from the path variable"))
    write_pipeline(tmp_path / "pipelines", "mine", PIPELINE.format(name="mine", prompt="from cwd"))
    write_pipeline(tmp_path / "pipelines", "product_shots", PIPELINE.format(name="shadow", prompt="cwd wins"))
    env = {"KKIAI_PIPELINE_PATH": f"{tmp_path / 'missing'}:{extra}"}

    first = kkiai_run("pipeline=mine", *api, cwd=tmp_path, env=env, run_dir=tmp_path / "r1")
    assert first.code == 0, first.stderr
    assert first.manifest["steps"]["only"]["input"]["prompt"] == "from the path variable"
    assert first.manifest["source"] == str((extra / "mine.yaml").resolve())

    second = kkiai_run("pipeline=mine", *api, cwd=tmp_path, run_dir=tmp_path / "r2")
    assert second.manifest["steps"]["only"]["input"]["prompt"] == "from cwd"

    third = kkiai_run("pipeline=product_shots", *api, cwd=tmp_path, run_dir=tmp_path / "r3")
    assert third.manifest["pipeline"] == "shadow"


def test_the_token_is_written_nowhere(tmp_path: Path, api: list[str]) -> None:
    result = kkiai_run("pipeline=img2img_refine", *api, cwd=tmp_path)
    assert result.code == 0, result.stderr
    for path in result.run_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in result.stdout + result.stderr


def test_unknown_pipeline_is_a_usage_error(tmp_path: Path) -> None:
    result = kkiai_run("pipeline=nope", "api=sandbox", cwd=tmp_path)
    assert result.code == 2
    assert "product_shots" in result.stderr  # Hydra lists the available names


def run_plain(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kkiai-run ARGS`` exactly as typed (no run directory or cache added)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "HYDRA_"))}
    environ.update(env or {})
    command = [str(SCRIPTS / "kkiai-run"), *args]
    return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=60)


def test_help_is_the_tools_own_page_and_lists_the_pipelines_found(tmp_path: Path) -> None:
    write_pipeline(
        tmp_path / "pipelines", "mine", "name: mine\ndescription: >\n  Mine,\n  on two lines.\nsteps: {}\n"
    )
    write_pipeline(tmp_path / "pipelines", "broken", "name: [unclosed\n")
    write_pipeline(tmp_path / "pipelines", "huge", "description: " + "x" * 300 + "\n")
    done = run_plain("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith("kkiai-run: run a YAML pipeline of image-generation predictions")
    assert "Hydra" not in page.split("--hydra-help")[1]  # not Hydra's generic page
    lines = page.splitlines()
    assert "  mine             Mine, on two lines." in lines
    assert any(line.startswith("  broken           [broken: ") and "(line 2)" in line for line in lines)
    assert "  huge             " + "x" * 79 + "…" in lines
    assert any(line.startswith("  product_shots    Two studio shots") for line in lines)
    assert "kkiai-run --rerun RUN_DIR [KEY=VALUE ...]" in page
    assert "dry_run=true" in page
    assert not (tmp_path / "outputs").exists()
    with_pipeline = run_plain("pipeline=product_shots", "-h", cwd=tmp_path)
    assert (with_pipeline.returncode, with_pipeline.stdout) == (0, page)


def test_version_is_the_packages(tmp_path: Path) -> None:
    done = run_plain("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"kkiai-pipeline {importlib.metadata.version('kkiai-pipeline')}\n"


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """Imported at a module's top: a core dependency. Imported inside a function (where an optional
    feature is used, such as the Ray launcher's shared limiter): a core or an extra's dependency."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package = Path(__file__).parent.parent / "kkiai_pipeline"
    top: set[str] = set()
    inner: set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        at_top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            (top if id(node) in at_top else inner).update(name.split(".")[0] for name in names)
    ours = set(sys.stdlib_module_names) | {"kkiai_pipeline", "hydra_plugins"}
    project = tomllib.loads((package.parent / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=\[ ;]", d)[0].lower() for d in requirements}

    core = names(project["dependencies"])
    extras = names([d for group in project["optional-dependencies"].values() for d in group])
    distributions = importlib.metadata.packages_distributions()

    def undeclared(modules: set[str], declared: set[str]) -> dict[str, Any]:
        return {
            module: distributions.get(module)
            for module in modules - ours
            if not {d.lower() for d in distributions.get(module, [module])} & declared
        }

    assert undeclared(top, core) == {}
    assert undeclared(inner, core | extras) == {}
    assert "ray" in inner - top  # the check above did look at imports inside functions


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_pipeline_found_by_hydras_search_path_keeps_its_folder(
    tmp_path: Path, api: list[str], how: str
) -> None:
    conf = tmp_path / "conf"
    write_pipeline(
        conf / "pipeline",
        "own",
        """
        name: own
        steps:
          restyle:
            model: stability-ai/stable-diffusion-img2img
            input: {image: '{{ file("assets/photo.png") }}', prompt: a photo}
        """,
    )
    (conf / "pipeline" / "assets").mkdir()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(conf / "pipeline" / "assets" / "photo.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = f"--config-dir={conf}" if how == "--config-dir" else f"hydra.searchpath=[file://{conf}]"
    result = kkiai_run(where, "pipeline=own", *api, cwd=elsewhere)
    assert result.code == 0, result.stderr
    assert result.manifest["source"] == str((conf / "pipeline" / "own.yaml").resolve())
    assert result.manifest["steps"]["restyle"]["input"]["image"].startswith("data:image/png;base64,")
