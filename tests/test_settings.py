"""Settings: the declared schema, the checks before Hydra and before the run, and every shipped config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from kkiai_pipeline import discovery
from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.api.cog import CogOptions
from kkiai_pipeline.config_schema import API, COG, SANDBOX, check_config, did_you_mean, known_keys
from kkiai_pipeline.errors import ConfigError
from kkiai_pipeline.paths import shipped_dir
from kkiai_pipeline.sandbox.config import SandboxConfig
from kkiai_pipeline.settings import check_command_line, check_writable, load_settings

from .integration import kkiai_run

SHIPPED = discovery.available([shipped_dir("pipelines")])
SHIPPED_PIPELINES = sorted(SHIPPED)
API_OPTIONS = sorted(p.stem for p in (shipped_dir("conf") / "api").glob("*.yaml"))
ENVIRON = {"KKIAI_API_TOKEN": "t"}


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {**ENVIRON, "XDG_CACHE_HOME": str(tmp_path / "xdg")}


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    discovery.register(SHIPPED)
    yield


def composed(*overrides: str) -> DictConfig:
    """The primary config as kkiai-run composes it (no Hydra node)."""
    with initialize_config_dir(config_dir=str(shipped_dir("conf")), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        check_config(data)
    return str(caught.value)


# -- the schema covers exactly what the code reads ------------------------------------------------


def test_the_api_group_declares_every_client_option_and_the_two_new_ones() -> None:
    client = {f.name for f in fields(ClientOptions)}
    assert set(API.keys) == client | {
        "kind",
        "base_url",
        "token_env",
        "allow_insecure_http",
        "rate_scope",
        "sandbox",
    }
    assert {"list_lag_seconds", "clock_skew_seconds"} <= client
    assert ClientOptions().list_lag_seconds == 60.0
    assert ClientOptions().clock_skew_seconds == 300.0


def test_the_sandbox_keys_are_the_fields_of_sandbox_config_plus_store_and_file_ttl() -> None:
    assert set(SANDBOX.keys) == {f.name for f in fields(SandboxConfig)} | {"store", "file_ttl"}


def test_the_cog_group_declares_every_cog_option() -> None:
    assert set(COG.keys) == {f.name for f in fields(CogOptions)} | {"servers", "concurrency"}


def test_every_shipped_default_is_declared_and_legal(registered: None) -> None:
    for api in API_OPTIONS:
        cfg = composed("pipeline=product_shots", f"api={api}")
        check_config(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def test_the_new_settings_have_their_documented_defaults(registered: None) -> None:
    cfg = composed("pipeline=product_shots", "api=sandbox")
    assert cfg.repay_expired is False
    # the emulator's list never lags
    assert (cfg.api.list_lag_seconds, cfg.api.clock_skew_seconds) == (1, 300)
    assert (cfg.api.sandbox.store, cfg.api.sandbox.file_ttl) == (None, 3600)


# -- every shipped config with every shipped pipeline ---------------------------------------------


@pytest.mark.parametrize("api", API_OPTIONS)
@pytest.mark.parametrize("pipeline", SHIPPED_PIPELINES)
def test_every_shipped_config_loads(
    registered: None, api: str, pipeline: str, tmp_path: Path, environ: dict[str, str]
) -> None:
    settings = load_settings(
        composed(f"pipeline={pipeline}", f"api={api}"), environ=environ, run_dir=tmp_path
    )

    assert settings.api.kind == api
    assert settings.repay_expired is False
    assert settings.api.client.list_lag_seconds == (1.0 if api == "sandbox" else 60.0)
    assert settings.api.client.clock_skew_seconds == 300.0
    assert settings.cache_dir == tmp_path / "xdg" / "kkiai-pipeline"
    assert not settings.cache_dir.exists()  # probed, and removed again


def test_there_is_something_to_compose() -> None:
    assert API_OPTIONS == ["cog", "kkiai", "sandbox"]
    assert "product_shots" in SHIPPED_PIPELINES


def test_overridden_settings_reach_their_dataclasses(registered: None, tmp_path: Path, environ: Any) -> None:
    cfg = composed(
        "pipeline=product_shots",
        "api=sandbox",
        "repay_expired=true",
        "api.list_lag_seconds=5",
        "api.clock_skew_seconds=0.5",
        "api.sandbox.queue_seconds=0",
        "cog.ready_timeout=7",
        "+cog.concurrency={a/b:2}",
    )
    settings = load_settings(cfg, environ=environ, run_dir=tmp_path)

    assert settings.repay_expired is True
    assert (settings.api.client.list_lag_seconds, settings.api.client.clock_skew_seconds) == (5, 0.5)
    assert settings.api.sandbox["queue_seconds"] == 0
    # Only what SandboxConfig takes is passed on (store and file_ttl once it has them).
    assert set(settings.api.sandbox) <= {f.name for f in fields(SandboxConfig)}
    SandboxConfig(**settings.api.sandbox)
    assert settings.cog.options.ready_timeout == 7
    assert settings.cog.concurrency == {"a/b": 2}


# -- unknown keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("dryrun", "unknown setting 'dryrun' (did you mean 'dry_run'?)"),
        ("timout", "unknown setting 'timout' (did you mean 'timeout'?)"),
        (
            "api.sandbox.queue_second",
            "unknown setting 'api.sandbox.queue_second' (did you mean 'api.sandbox.queue_seconds'?)",
        ),
        ("api.sandbox.bogus", "unknown setting 'api.sandbox.bogus'"),
        ("ready_timeout", "unknown setting 'ready_timeout' (did you mean 'cog.ready_timeout'?)"),
        ("cog.ready_timeot", "unknown setting 'cog.ready_timeot' (did you mean 'cog.ready_timeout'?)"),
        ("xyz", "unknown setting 'xyz'"),
    ],
)
def test_an_unknown_key_on_the_command_line_is_refused_with_a_did_you_mean(key: str, message: str) -> None:
    for prefix in ("", "+", "++", "~"):
        with pytest.raises(ConfigError) as caught:
            check_command_line([f"{prefix}{key}=1" if prefix != "~" else f"~{key}", "api=sandbox"])
        assert str(caught.value) == message


def test_the_token_on_the_command_line_gets_its_own_message() -> None:
    with pytest.raises(
        ConfigError, match=r"^api.token is not a setting: the token is read only from the env"
    ):
        check_command_line(["+api.token=abc"])


@pytest.mark.parametrize(
    "args",
    [
        ["pipeline=product_shots", "api=sandbox", "api.sandbox.fail_rate=0.1"],
        ["+pipeline.steps.generate.input.guidance=9", "pipeline.params.x=1"],  # checked with the pipeline
        ["hydra.run.dir=/tmp/x", "hydra/launcher=joblib", "+hydra.callbacks.x._target_=y"],
        ["+cog.servers={a/b:http://127.0.0.1:5000}", "cog.concurrency={a/b:2}"],
        ["--multirun", "-cn", "config", "seed=1,2,3", "api=sandbox,kkiai"],
        ["pipeline.params.subject=[a"],  # a syntax error: Hydra reports it with the offending text
    ],
)
def test_known_keys_pass_the_command_line_check(args: list[str]) -> None:
    check_command_line(args)


def test_hydra_options_and_their_values_are_not_taken_for_overrides() -> None:
    for args in (
        ["-cn", "config", "+dryrun=true"],
        ["--config-dir=conf", "-m", "+dryrun=true", "--info", "all"],
    ):
        with pytest.raises(ConfigError, match=r"^unknown setting 'dryrun'"):
            check_command_line(args)
    check_command_line(["-cd", "myconf", "api.sandbox.queue_seconds=1"])  # that config may pick the emulator


def test_an_emulator_knob_without_the_emulator_is_refused() -> None:
    message = "api.sandbox.queue_seconds is a setting of the emulator: it applies only with api=sandbox"
    for args in (["api.sandbox.queue_seconds=1"], ["api=kkiai", "+api.sandbox.queue_seconds=1"]):
        with pytest.raises(ConfigError) as caught:
            check_command_line(args)
        assert str(caught.value) == message
    assert refusal({"api": {"kind": "kkiai", "sandbox": {"queue_seconds": 1}}}) == message


def test_a_sweep_is_refused_for_any_bad_value_before_a_job_runs() -> None:
    with pytest.raises(ConfigError, match=r"^timeout must be a finite number > 0, not inf$"):
        check_command_line(["-m", "timeout=5,inf"])
    with pytest.raises(ConfigError, match=r"^seed must be a whole number >= 0 or null, not -1$"):
        check_command_line(["-m", "seed=range(-1,2)"])
    check_command_line(["-m", "timeout=choice(5,${oc.env:T})"])  # interpolations: checked per job


def test_unknown_keys_in_the_composed_config_are_refused_in_every_group() -> None:
    assert refusal({"dryrun": True}) == "unknown setting 'dryrun' (did you mean 'dry_run'?)"
    assert (
        refusal({"api": {"kind": "sandbox", "sandbox": {"bogus": 1}}})
        == "unknown setting 'api.sandbox.bogus'"
    )
    assert refusal({"cog": {"ready_timout": 1}}) == (
        "unknown setting 'cog.ready_timout' (did you mean 'cog.ready_timeout'?)"
    )
    assert refusal({"api": {"token": "x"}}).startswith("api.token is not a setting")
    check_config({"pipeline": {"anything": [1, {"goes": None}]}, "hydra": {"run": {"dir": "x"}}})


def test_did_you_mean_knows_every_declared_key() -> None:
    keys = set(known_keys())
    assert {"dry_run", "api.read_timeout", "api.sandbox.fail_rate", "cog.ready_timeout"} <= keys
    assert did_you_mean("api.sandbox.predict_second") == "api.sandbox.predict_seconds"
    assert did_you_mean("zzzz") is None


# -- values ---------------------------------------------------------------------------------------


def _nested(key: str, value: object) -> dict[str, Any]:
    *groups, name = key.split(".")
    data: dict[str, Any] = {name: value}
    for group in reversed(groups):
        data = {group: data}
    if groups[:2] == ["api", "sandbox"]:
        data["api"]["kind"] = "sandbox"
    return data


NON_FINITE = [float("inf"), float("-inf"), float("nan"), float("1e400")]


@pytest.mark.parametrize(
    ("key", "wanted"),
    [
        ("timeout", "a finite number > 0"),
        ("api.read_timeout", "a finite number > 0"),
        ("api.backoff_base", "a finite number >= 0"),
        ("api.create_rate_per_minute", "a finite number >= 0"),
        ("api.list_lag_seconds", "a finite number >= 0"),
        ("api.clock_skew_seconds", "a finite number >= 0"),
        ("api.sandbox.queue_seconds", "a finite number >= 0"),
        ("api.sandbox.fail_rate", "a finite number between 0 and 1"),
        ("api.sandbox.file_ttl", "a finite number >= 0"),
        ("cog.ready_timeout", "a finite number >= 0"),
        ("cog.health_interval", "a finite number > 0"),
        ("max_concurrency", "a whole number >= 1"),
        ("api.wait_seconds", "a whole number between 0 and 60"),
        ("api.sandbox.workers", "a whole number >= 1"),
        ("cog.webhook_port", "a whole number between 0 and 65535"),
    ],
)
def test_non_finite_numbers_are_refused_naming_their_own_key(key: str, wanted: str) -> None:
    for value in NON_FINITE:
        assert refusal(_nested(key, value)) == f"{key} must be {wanted}, not {value!r}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("timeout", 0, "timeout must be a number > 0, not 0"),
        ("timeout", "5", "timeout must be a number > 0, not '5'"),
        ("timeout", True, "timeout must be a number > 0, not true"),
        ("max_concurrency", 2.0, "max_concurrency must be a whole number >= 1, not 2.0"),
        ("seed", -3, "seed must be a whole number >= 0 or null, not -3"),
        ("dry_run", "yes", "dry_run must be true or false, not 'yes'"),
        ("repay_expired", 1, "repay_expired must be true or false, not 1"),
        ("progress", "on", "progress must be 'auto', true or false, not 'on'"),
        ("on_interrupt", "stop", "on_interrupt must be 'cancel' or 'leave', not 'stop'"),
        ("cache_dir", 5, "cache_dir must be a string or null, not 5"),
        ("api.kind", "sandboxx", "api.kind must be 'kkiai', 'sandbox' or 'cog', not 'sandboxx'"),
        ("api.max_attempts", 0, "api.max_attempts must be a whole number >= 1, not 0"),
        ("api.wait_seconds", 61, "api.wait_seconds must be a whole number between 0 and 60, not 61"),
        ("api.retry_ambiguous_creates", "no", "api.retry_ambiguous_creates must be true or false, not 'no'"),
        ("api.list_lag_seconds", -1, "api.list_lag_seconds must be a number >= 0, not -1"),
        ("api.sandbox.queue_seconds", -1, "api.sandbox.queue_seconds must be a number >= 0, not -1"),
        ("api.sandbox.port", 70000, "api.sandbox.port must be a whole number between 0 and 65535, not 70000"),
        (
            "api.sandbox.sync_final_status",
            "done",
            "api.sandbox.sync_final_status must be 'processing' or 'succeeded', not 'done'",
        ),
        ("api.sandbox.store", 3, "api.sandbox.store must be a string or null, not 3"),
        (
            "api.sandbox.retry_after_seconds",
            0,
            "api.sandbox.retry_after_seconds must be a whole number >= 1, not 0",
        ),
        ("cog.ready_timeout", -1, "cog.ready_timeout must be a number >= 0, not -1"),
        ("cog.concurrency", {"a/b": 0}, "cog.concurrency.a/b must be a whole number >= 1, not 0"),
        (
            "cog.servers",
            {"a/b": 5000},
            "cog.servers.a/b must be a string, not 5000; e.g. 'cog.servers={owner/name:http://127.0.0.1:5000}'",
        ),
        (
            "cog.servers",
            "http://x",
            "cog.servers must be a mapping of names to strings or null, not 'http://x'; e.g. 'cog.servers={owner/name:http://127.0.0.1:5000}'",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(key: str, value: object, message: str) -> None:
    assert refusal(_nested(key, value)) == message


def test_a_group_given_a_plain_value_is_refused() -> None:
    assert refusal({"cog": 5}) == "cog must be a group of settings, not 5"


def test_an_interpolation_that_cannot_resolve_names_the_setting(tmp_path: Path, environ: Any) -> None:
    cfg = OmegaConf.create({"cache_dir": "${oc.env:KKIAI_NOPE}", "api": {"kind": "sandbox"}})
    with pytest.raises(ConfigError, match=r"^cannot resolve setting 'cache_dir': .*KKIAI_NOPE"):
        load_settings(cfg, environ=environ, run_dir=tmp_path)


# -- directories ----------------------------------------------------------------------------------


def test_a_writable_directory_is_probed_and_what_was_made_is_removed(tmp_path: Path) -> None:
    check_writable("cache_dir", tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    check_writable("cache_dir", tmp_path / "kept")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_an_unwritable_directory_names_its_key(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cases = {
        Path("/proc/kkiai-x"): "No such file or directory",
        tmp_path / "file" / "run": "Not a directory",
    }
    for directory, reason in cases.items():
        with pytest.raises(ConfigError) as caught:
            check_writable("hydra.run.dir", directory)
        assert str(caught.value) == f"hydra.run.dir is not a writable directory: {directory} ({reason})"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(
        ConfigError, match=r"^cache_dir is not a writable directory: .*\(Permission denied\)$"
    ):
        check_writable("cache_dir", tmp_path / "ro" / "cache")


def test_load_settings_refuses_an_unwritable_cache_dir(
    registered: None, tmp_path: Path, environ: Any
) -> None:
    cfg = composed("pipeline=product_shots", "api=sandbox", "cache_dir=/proc/kkiai-cache")
    with pytest.raises(ConfigError) as caught:
        load_settings(cfg, environ=environ, run_dir=tmp_path)
    assert str(caught.value) == (
        "cache_dir is not a writable directory: /proc/kkiai-cache (No such file or directory)"
    )


# -- the real command -----------------------------------------------------------------------------


def test_a_misspelled_setting_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    result = kkiai_run("pipeline=product_shots", "api=sandbox", "+dryrun=true", cwd=tmp_path)

    assert (result.code, result.stderr) == (
        2,
        "kkiai-run: error: unknown setting 'dryrun' (did you mean 'dry_run'?)\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_bad_value_is_refused_before_the_run_directory_exists(tmp_path: Path) -> None:
    result = kkiai_run("pipeline=product_shots", "api=sandbox", "timeout=nan", cwd=tmp_path)

    assert (result.code, result.stderr) == (
        2,
        "kkiai-run: error: timeout must be a finite number > 0, not nan\n",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["/proc/kkiai-run", "file/run"])
def test_an_unwritable_run_directory_is_refused_before_anything_runs(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("")
    run_dir = tmp_path / where
    result = kkiai_run("pipeline=product_shots", "api=sandbox", cwd=tmp_path, run_dir=run_dir)

    reason = "No such file or directory" if where.startswith("/") else "Not a directory"
    assert result.code == 2
    assert (
        result.stderr
        == f"kkiai-run: error: hydra.run.dir is not a writable directory: {run_dir} ({reason})\n"
    )


def test_an_unwritable_sweep_directory_is_refused(tmp_path: Path) -> None:
    result = kkiai_run(
        "-m", "pipeline=product_shots", "api=sandbox", "hydra.sweep.dir=/proc/kkiai-sweep", cwd=tmp_path
    )

    assert result.code == 2
    assert result.stderr == (
        "kkiai-run: error: hydra.sweep.dir is not a writable directory: /proc/kkiai-sweep (No such file or directory)\n"
    )


# -- api.rate_scope -----------------------------------------------------------------------------


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize(("overrides", "scope"), [((), "process"), (("api.rate_scope=machine",), "machine")])
def test_rate_scope_is_process_for_a_single_run_unless_set(
    tmp_path: Path, environ: dict[str, str], overrides: tuple[str, ...], scope: str
) -> None:
    cfg = composed("pipeline=product_shots", *overrides)
    settings = load_settings(cfg, environ=environ, run_dir=tmp_path / "run")
    assert settings.api.rate_scope == scope


def test_an_unknown_rate_scope_is_refused() -> None:
    message = refusal({"api": {"rate_scope": "planet"}})
    assert message == "api.rate_scope must be 'auto', 'process', 'machine' or 'cluster', not 'planet'"


def test_a_new_directory_removed_by_another_process_s_check_is_looked_at_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two kkiai-run processes checking one new cache_dir: the other one's check made the directory and
    # removes it again between this one's "is it there?" and "may I write it?".
    directory = tmp_path / "cache"
    directory.mkdir()
    asked: list[str] = []
    real_access = os.access

    def access(path: Any, mode: int) -> bool:
        asked.append(str(path))
        if len(asked) == 1:
            Path(path).rmdir()
            return False
        return real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    check_writable("cache_dir", directory)  # no "permission denied"
    assert asked == [str(directory)]  # the second look found it gone and probed by writing instead
    assert not directory.exists()  # what the probe made, it removed
