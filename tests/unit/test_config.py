"""convfix.config: decoding, discovery, precedence, origins and the errors users see.

No TensorFlow here. Files are written under tmp_path; every load passes ``env`` explicitly so
the variables of whoever runs the tests cannot leak in.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convfix.config.sources
from convfix.config import (
    POLICY_NAMES,
    Config,
    DtypePolicyConfig,
    PoliciesConfig,
    apply_overrides,
    load_config,
    resolve_config,
)
from convfix.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

REPO = Path(__file__).resolve().parents[2]
PRESETS = ("default", "observe", "strict", "aggressive")
MODES = "one of fix, warn, strict, off"
DTYPES = "float16, bfloat16, float32, float64, int32"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path, so discovered files are named as users see them: ``convfix.toml``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with no config in it, shareable across hypothesis examples."""
    return tmp_path_factory.mktemp("empty")


@pytest.fixture
def preset_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Replace the shipped presets with files the test writes."""
    directory = tmp_path / "presets"
    directory.mkdir()
    monkeypatch.setattr(convfix.config.sources, "_preset_dir", lambda: directory)
    return directory


def shipped_preset(name: str) -> str:
    return files("convfix").joinpath("presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")


def config_error(text: str, *, name: str = "convfix.toml") -> str:
    """Write ``text`` to ``name`` in the working directory, load it, return the error."""
    Path(name).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(env={})
    return str(raised.value)


# Built-in defaults and presets


def test_default_preset_decodes_to_the_built_in_defaults() -> None:
    # given the shipped default preset
    table = tomllib.loads(shipped_preset("default"))

    # when it is decoded on its own
    decoded = msgspec.convert(table, Config)

    # then every field equals Config()'s
    assert msgspec.to_builtins(decoded) == msgspec.to_builtins(Config())
    assert decoded == Config()


def test_defaults_cast_to_the_keras_compute_dtype_and_pad_only_what_is_too_small() -> None:
    # given no configuration at all
    # when the defaults are read, from the schema and from the shipped preset
    preset = tomllib.loads(shipped_preset("default"))["policies"]

    # then dtype repairs target the Keras policy and padding repairs zero-pad
    assert Config().policies.dtype.target == preset["dtype"]["target"] == "policy"
    assert Config().policies.padding.strategy == preset["padding"]["strategy"] == "pad"


def test_the_old_defaults_are_still_valid_settings(in_tmp: Path) -> None:
    # given a file asking for the defaults before 0.2
    (in_tmp / "convfix.toml").write_text(
        '[policies.dtype]\ntarget = "promote"\n[policies.padding]\nstrategy = "same"\n'
    )

    # when it is loaded
    config = load_config(env={}, cwd=in_tmp)

    # then they are what it says
    assert config.policies.dtype.target == "promote"
    assert config.policies.padding.strategy == "same"


def test_no_config_anywhere_gives_the_built_in_defaults(tmp_path: Path) -> None:
    # given an empty directory and no environment
    # when the config is resolved there
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then it is the defaults, from no file
    assert resolved.config == Config()
    assert resolved.file is None
    assert set(resolved.origins.values()) == {"default"}


def test_origins_name_every_leaf_key(tmp_path: Path) -> None:
    # given nothing to load
    # when the config is resolved
    origins = resolve_config(env={}, cwd=tmp_path).origins

    # then each leaf key path of the schema has an origin, and nothing else does
    policies = {
        f"policies.{name}.{key}"
        for name in POLICY_NAMES
        for key in getattr(Config().policies, name).__struct_fields__
    }
    top = {"extends", "mode", "gpu.memory_growth"}
    events = {"events.path", "events.format", "events.sink", "events.summary_interval"}
    assert set(origins) == top | events | policies


def test_the_four_documented_presets_are_shipped() -> None:
    # given the package's preset directory
    names = {p.name for p in files("convfix").joinpath("presets").iterdir()}

    # then it holds exactly the documented presets
    assert names == {f"{name}.toml" for name in PRESETS}


@pytest.mark.parametrize(
    ("preset", "mode"),
    [("default", "fix"), ("observe", "warn"), ("strict", "strict"), ("aggressive", "fix")],
)
def test_each_preset_loads_by_name(tmp_path: Path, preset: str, mode: str) -> None:
    # given a file that extends the preset and says nothing else
    (tmp_path / "convfix.toml").write_text(f'extends = "{preset}"\n')

    # when it is loaded
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then the preset's mode applies and is reported as coming from the preset
    assert resolved.config.mode == mode
    assert resolved.origins["mode"] == f"preset:{preset}"


def test_extending_default_changes_nothing(tmp_path: Path) -> None:
    # given a file that extends the default preset
    (tmp_path / "convfix.toml").write_text('extends = "default"\n')

    # when it is loaded
    config = load_config(env={}, cwd=tmp_path)

    # then only `extends` differs from the built-in defaults
    assert msgspec.structs.replace(config, extends=None) == Config()


def test_observe_preset_reports_with_every_policy_and_changes_nothing(tmp_path: Path) -> None:
    # given the observe preset
    (tmp_path / "convfix.toml").write_text('extends = "observe"\n')

    # when it is loaded
    config = load_config(env={}, cwd=tmp_path)

    # then every policy warns, layout included
    assert {name: config.policy_mode(name) for name in POLICY_NAMES} == dict.fromkeys(
        POLICY_NAMES, "warn"
    )


def test_strict_preset_refuses_with_every_policy_but_layout(tmp_path: Path) -> None:
    # given the strict preset
    (tmp_path / "convfix.toml").write_text('extends = "strict"\n')

    # when it is loaded
    config = load_config(env={}, cwd=tmp_path)

    # then every policy refuses, except layout, whose guesses must not refuse a call
    modes = {name: config.policy_mode(name) for name in POLICY_NAMES}
    assert modes == {**dict.fromkeys(POLICY_NAMES, "strict"), "layout": "off"}


def test_aggressive_preset_repairs_with_every_policy(tmp_path: Path) -> None:
    # given the aggressive preset
    (tmp_path / "convfix.toml").write_text('extends = "aggressive"\n')

    # when it is loaded
    config = load_config(env={}, cwd=tmp_path)

    # then every policy fixes, layout included, with the harder-trying settings
    assert {name: config.policy_mode(name) for name in POLICY_NAMES} == dict.fromkeys(
        POLICY_NAMES, "fix"
    )
    assert config.policies.padding.strategy == "pad"
    assert config.policies.split_batch.max_retries == 16
    assert config.gpu.memory_growth is True


@pytest.mark.parametrize("preset", PRESETS)
def test_readers_copy_of_each_preset_is_byte_identical(preset: str) -> None:
    # given the package preset and the copy at the top of the repository
    package = files("convfix").joinpath("presets").joinpath(f"{preset}.toml").read_bytes()
    readers = (REPO / "policies" / f"{preset}.toml").read_bytes()

    # then they are the same bytes
    assert readers == package


def test_readers_copies_are_exactly_the_shipped_presets() -> None:
    # given the readers' directory
    names = {path.name for path in (REPO / "policies").glob("*.toml")}

    # then it has one copy per preset and no strays
    assert names == {f"{preset}.toml" for preset in PRESETS}


# Discovery


def test_convfix_config_variable_beats_convfix_toml(tmp_path: Path) -> None:
    # given both a named file and ./convfix.toml
    (tmp_path / "named.toml").write_text('mode = "strict"\n')
    (tmp_path / "convfix.toml").write_text('mode = "warn"\n')

    # when CONVFIX_CONFIG names the first
    resolved = resolve_config(env={"CONVFIX_CONFIG": "named.toml"}, cwd=tmp_path)

    # then the named file is used
    assert resolved.config.mode == "strict"
    assert resolved.file == str(tmp_path / "named.toml")


def test_convfix_toml_beats_pyproject(tmp_path: Path) -> None:
    # given ./convfix.toml and a pyproject.toml with a [tool.convfix] table
    (tmp_path / "convfix.toml").write_text('mode = "warn"\n')
    (tmp_path / "pyproject.toml").write_text('[tool.convfix]\nmode = "strict"\n')

    # when the config is discovered
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then convfix.toml is used
    assert resolved.config.mode == "warn"
    assert resolved.file == str(tmp_path / "convfix.toml")


def test_pyproject_tool_convfix_table_is_used(tmp_path: Path) -> None:
    # given only a pyproject.toml with a [tool.convfix] table
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.convfix]\nmode = "warn"\n'
    )

    # when the config is discovered
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then the table is used, and reported under the file's name
    assert resolved.config.mode == "warn"
    assert resolved.origins["mode"] == str(tmp_path / "pyproject.toml")


def test_pyproject_without_the_table_is_ignored(tmp_path: Path) -> None:
    # given a pyproject.toml that says nothing about convfix
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.ruff]\nx = 1\n')

    # when the config is discovered
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then it is as if there were no file
    assert resolved.config == Config()
    assert resolved.file is None


def test_explicit_path_beats_convfix_config_variable(tmp_path: Path) -> None:
    # given two files, one named by the variable, one by the argument
    (tmp_path / "env.toml").write_text('mode = "strict"\n')
    (tmp_path / "arg.toml").write_text('mode = "warn"\n')

    # when both are given
    config = load_config("arg.toml", env={"CONVFIX_CONFIG": "env.toml"}, cwd=tmp_path)

    # then the argument wins
    assert config.mode == "warn"


def test_empty_convfix_config_counts_as_unset(tmp_path: Path) -> None:
    # given ./convfix.toml
    (tmp_path / "convfix.toml").write_text('mode = "warn"\n')

    # when CONVFIX_CONFIG is set but empty
    config = load_config(env={"CONVFIX_CONFIG": ""}, cwd=tmp_path)

    # then discovery carries on to ./convfix.toml
    assert config.mode == "warn"


def test_discovered_files_are_named_as_opened_from_the_working_directory(in_tmp: Path) -> None:
    # given ./convfix.toml in the working directory
    Path("convfix.toml").write_text('mode = "warn"\n')

    # when the config is discovered without a cwd argument
    resolved = resolve_config(env={})

    # then the file is named relative to it
    assert resolved.file == "convfix.toml"
    assert resolved.origins["mode"] == "convfix.toml"


def test_explicit_pyproject_path_reads_its_table(tmp_path: Path) -> None:
    # given a pyproject.toml elsewhere
    (tmp_path / "pyproject.toml").write_text('[tool.convfix]\nmode = "strict"\n')

    # when it is named as the config file
    config = load_config(tmp_path / "pyproject.toml", env={})

    # then its [tool.convfix] table is the config
    assert config.mode == "strict"


# Precedence


def test_preset_overrides_defaults(tmp_path: Path) -> None:
    # given a file that only extends the aggressive preset
    (tmp_path / "convfix.toml").write_text('extends = "aggressive"\n')

    # when it is resolved
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then the preset's values win over the defaults, and say so
    assert resolved.config.policies.padding.strategy == "pad"
    assert resolved.origins["policies.padding.strategy"] == "preset:aggressive"
    assert resolved.origins["policies.split_batch.factor"] == "default"


def test_file_overrides_preset(tmp_path: Path) -> None:
    # given a file that extends aggressive and changes one of its keys
    (tmp_path / "convfix.toml").write_text(
        'extends = "aggressive"\n[policies.layout]\nmode = "warn"\n'
    )

    # when it is resolved
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then the file's value wins
    assert resolved.config.policies.layout.mode == "warn"
    assert resolved.origins["policies.layout.mode"] == str(tmp_path / "convfix.toml")


def test_tables_merge_key_by_key(tmp_path: Path) -> None:
    # given a preset that sets split_batch.max_retries and a file that sets split_batch.factor
    (tmp_path / "convfix.toml").write_text(
        'extends = "aggressive"\n[policies.split_batch]\nfactor = 0.25\n'
    )

    # when it is resolved
    split = load_config(env={}, cwd=tmp_path).policies.split_batch

    # then both survive: the file's table did not replace the preset's
    assert (split.factor, split.max_retries) == (0.25, 16)


def test_environment_overrides_file(tmp_path: Path) -> None:
    # given a file setting the keys the environment can override
    (tmp_path / "convfix.toml").write_text(
        'mode = "warn"\n[events]\npath = "file.log"\nformat = "console"\n'
    )
    env = {
        "CONVFIX_MODE": "strict",
        "CONVFIX_EVENTS_PATH": "env-{pid}.log",
        "CONVFIX_EVENTS_FORMAT": "json",
    }

    # when the environment sets them too
    resolved = resolve_config(env=env, cwd=tmp_path)

    # then the environment wins, and says which variable
    config = resolved.config
    assert (config.mode, config.events.path, config.events.format) == (
        "strict",
        "env-{pid}.log",
        "json",
    )
    assert resolved.origins["mode"] == "env:CONVFIX_MODE"
    assert resolved.origins["events.path"] == "env:CONVFIX_EVENTS_PATH"
    assert resolved.origins["events.format"] == "env:CONVFIX_EVENTS_FORMAT"


def test_each_layer_reports_its_own_origin(tmp_path: Path) -> None:
    # given defaults, a preset, a file and the environment each setting something
    (tmp_path / "convfix.toml").write_text('extends = "aggressive"\n[gpu]\nmemory_growth = false\n')

    # when resolved
    resolved = resolve_config(env={"CONVFIX_MODE": "warn"}, cwd=tmp_path)

    # then each value names the layer it came from
    file = str(tmp_path / "convfix.toml")
    assert resolved.origins["events.sink"] == "default"
    assert resolved.origins["policies.layout.mode"] == "preset:aggressive"
    assert resolved.origins["gpu.memory_growth"] == file
    assert resolved.origins["extends"] == file
    assert resolved.origins["mode"] == "env:CONVFIX_MODE"


def test_empty_environment_values_count_as_unset(tmp_path: Path) -> None:
    # given a file and override variables that are set but empty
    (tmp_path / "convfix.toml").write_text('mode = "warn"\n')
    env = {"CONVFIX_MODE": "", "CONVFIX_EVENTS_PATH": "", "CONVFIX_EVENTS_FORMAT": ""}

    # when it is loaded
    config = load_config(env=env, cwd=tmp_path)

    # then the file's values stand
    assert config.mode == "warn"
    assert config.events == Config().events


def test_kill_switch_works_without_reading_a_broken_file(tmp_path: Path) -> None:
    # given a config file that would not load
    (tmp_path / "convfix.toml").write_text("mode = \n")

    # when CONVFIX_MODE=off
    resolved = resolve_config(env={"CONVFIX_MODE": "off"}, cwd=tmp_path)

    # then everything is off and no file was read
    assert [resolved.config.policy_mode(name) for name in POLICY_NAMES] == ["off"] * len(
        POLICY_NAMES
    )
    assert resolved.file is None


def test_preset_may_extend_another_preset(tmp_path: Path, preset_dir: Path) -> None:
    # given preset "child" extending preset "base", and a file extending "child"
    (preset_dir / "base.toml").write_text('mode = "warn"\n[gpu]\nmemory_growth = true\n')
    (preset_dir / "child.toml").write_text('extends = "base"\nmode = "strict"\n')
    (tmp_path / "convfix.toml").write_text('extends = "child"\n')

    # when it is resolved
    resolved = resolve_config(env={}, cwd=tmp_path)

    # then the child's values beat the base's, and both are reported
    assert (resolved.config.mode, resolved.config.gpu.memory_growth) == ("strict", True)
    assert resolved.origins["mode"] == "preset:child"
    assert resolved.origins["gpu.memory_growth"] == "preset:base"


# Errors


def test_unknown_top_level_key_lists_valid_keys(in_tmp: Path) -> None:
    message = config_error("colour = 1\n")

    assert message == (
        "convfix.toml: colour: unknown key (valid keys: events, extends, gpu, mode, policies)"
    )


def test_unknown_nested_key_lists_valid_keys(in_tmp: Path) -> None:
    message = config_error("[policies.dtype]\ncolour = 1\n")

    assert message == (
        "convfix.toml: policies.dtype.colour: unknown key (valid keys: mode, output, target)"
    )


def test_unknown_policy_lists_the_policies(in_tmp: Path) -> None:
    message = config_error("[policies.colour]\nmode = 'fix'\n")

    assert message == (
        "convfix.toml: policies.colour: unknown key "
        "(valid keys: batch_dim, data_format, device_fallback, dtype, layout, padding, "
        "split_batch)"
    )


# A TOML dotted key (a.b.c = v) sets one nested value, so each case below is a one-line file.
@pytest.mark.parametrize(
    ("key", "value", "expected", "found"),
    [
        ("mode", "3", MODES, "3"),
        ("extends", "3", "a string", "3"),
        ("policies", "3", "a table", "3"),
        ("policies.dtype", "'fix'", "a table", "'fix'"),
        ("events.path", "3", "stderr, stdout or a file path", "3"),
        ("events.summary_interval", "'60'", "a finite number >= 0", "'60'"),
        ("gpu.memory_growth", "1", "true or false", "1"),
        ("policies.split_batch.gc", "'yes'", "true or false", "'yes'"),
        ("policies.split_batch.max_retries", "1.5", "an integer >= 1", "1.5"),
        ("policies.split_batch.min_chunk", "true", "an integer >= 1", "true"),
        ("policies.dtype.target", "[1]", "policy, promote, input, filter", "an array"),
        ("policies.device_fallback.device", "{}", "a non-empty string", "a table"),
    ],
)
def test_wrong_type_is_refused(
    in_tmp: Path, key: str, value: str, expected: str, found: str
) -> None:
    message = config_error(f"{key} = {value}\n")

    assert message.startswith(f"convfix.toml: {key}: expected {expected}")
    assert message.endswith(f", got {found}")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("split_batch.factor", "2", "a number in (0, 1)"),
        ("split_batch.factor", "1.0", "a number in (0, 1)"),
        ("split_batch.factor", "0", "a number in (0, 1)"),
        ("split_batch.factor", "-0.5", "a number in (0, 1)"),
        ("split_batch.factor", "nan", "a number in (0, 1)"),
        ("split_batch.max_retries", "0", "an integer >= 1"),
        ("split_batch.min_chunk", "0", "an integer >= 1"),
        ("split_batch.grow_back_after", "-1", "an integer >= 0"),
        ("split_batch.max_table_size", "0", "an integer >= 1"),
        ("split_batch.max_batch_bytes", "0", "an integer > 0"),
        ("dtype.target", "'float8'", f"policy, promote, input, filter or a dtype ({DTYPES})"),
        ("dtype.target", "'Float32'", f"policy, promote, input, filter or a dtype ({DTYPES})"),
        ("device_fallback.device", "''", "a non-empty string"),
    ],
)
def test_bad_policy_value_is_refused(in_tmp: Path, key: str, value: str, expected: str) -> None:
    message = config_error(f"policies.{key} = {value}\n")

    assert message == f"convfix.toml: policies.{key}: expected {expected}, got {value}"


@pytest.mark.parametrize("value", ["-1.0", "inf", "nan"])
def test_bad_summary_interval_is_refused(in_tmp: Path, value: str) -> None:
    message = config_error(f"events.summary_interval = {value}\n")

    assert message == (
        f"convfix.toml: events.summary_interval: expected a finite number >= 0, got {value}"
    )


@pytest.mark.parametrize(
    ("toml", "key", "valid"),
    [
        ("mode = 'loud'", "mode", MODES),
        ("[policies.layout]\nmode = 'loud'", "policies.layout.mode", MODES),
        ("[policies.dtype]\noutput = 'loud'", "policies.dtype.output", "one of compute, input"),
        ("[policies.padding]\nstrategy = 'loud'", "policies.padding.strategy", "one of same, pad"),
        ("[events]\nformat = 'loud'", "events.format", "one of json, console"),
        ("[events]\nsink = 'loud'", "events.sink", "one of convfix, logging, structlog"),
    ],
)
def test_bad_literal_lists_valid_values(in_tmp: Path, toml: str, key: str, valid: str) -> None:
    message = config_error(toml + "\n")

    assert message == f"convfix.toml: {key}: expected {valid}, got 'loud'"


@pytest.mark.parametrize(
    "path", ["stdout", "convfix-{pid}.log", "/logs/{task}/{pid}.jsonl", "a{{b}}"]
)
def test_events_path_may_use_pid_and_task(tmp_path: Path, path: str) -> None:
    (tmp_path / "convfix.toml").write_text(f"[events]\npath = '{path}'\n")

    assert load_config(env={}, cwd=tmp_path).events.path == path


@pytest.mark.parametrize(
    "path", ["x{user}.log", "x{}.log", "x{0}.log", "{pid:d}", "{task!r}", "{pid", "a}b", ""]
)
def test_bad_placeholder_in_events_path_is_refused(in_tmp: Path, path: str) -> None:
    message = config_error(f"[events]\npath = '{path}'\n")

    assert message == (
        "convfix.toml: events.path: expected stderr, stdout or a file path with no "
        f"placeholders but {{pid}}, {{task}} and {{task_type}}, got {path!r}"
    )


def test_pyproject_errors_prefix_keys_with_tool_convfix(in_tmp: Path) -> None:
    message = config_error("[tool.convfix]\nmode = 'loud'\n", name="pyproject.toml")

    assert message == f"pyproject.toml: tool.convfix.mode: expected {MODES}, got 'loud'"


def test_pyproject_tool_convfix_must_be_a_table(in_tmp: Path) -> None:
    message = config_error("[tool]\nconvfix = 3\n", name="pyproject.toml")

    assert message == "pyproject.toml: tool.convfix: expected a table, got 3"


def test_explicit_pyproject_without_the_table_is_refused(in_tmp: Path) -> None:
    Path("pyproject.toml").write_text("[project]\nname = 'x'\n")

    with pytest.raises(ConfigError, match=r"^pyproject.toml: tool.convfix: expected a table"):
        load_config("pyproject.toml", env={})


def test_toml_syntax_error_names_the_file(in_tmp: Path) -> None:
    message = config_error("mode = \n")

    assert message.startswith("convfix.toml: invalid TOML: ")
    assert "line 1" in message


def test_non_utf8_file_is_refused(in_tmp: Path) -> None:
    Path("convfix.toml").write_bytes(b"mode = '\xff'\n")

    with pytest.raises(ConfigError, match=r"^convfix.toml: invalid TOML: not UTF-8"):
        load_config(env={})


def test_missing_file_is_refused(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config("nowhere.toml", env={})

    assert str(raised.value) == "nowhere.toml: cannot read file: No such file or directory"


def test_unreadable_file_is_refused(in_tmp: Path) -> None:
    # chmod 000 does not stop root, so a directory stands in for a file that cannot be read
    Path("folder.toml").mkdir()

    with pytest.raises(ConfigError) as raised:
        load_config("folder.toml", env={})

    assert str(raised.value) == "folder.toml: cannot read file: Is a directory"


def test_missing_convfix_config_file_names_the_variable_and_path(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(env={"CONVFIX_CONFIG": "gone.toml"})

    assert str(raised.value) == (
        "environment: CONVFIX_CONFIG: expected a readable file, "
        "got 'gone.toml' (No such file or directory)"
    )


@pytest.mark.parametrize("name", ["../strict.toml", "strict.toml", "presets/strict", "a\\b"])
def test_extends_refuses_a_path(in_tmp: Path, name: str) -> None:
    message = config_error(f"extends = '{name}'\n")

    assert message == f"convfix.toml: extends: expected a preset name, not a path, got {name!r}"


def test_unknown_preset_lists_the_available_presets(in_tmp: Path) -> None:
    message = config_error("extends = 'gentle'\n")

    assert message == (
        "convfix.toml: extends: expected one of the presets "
        "aggressive, default, observe, strict, got 'gentle'"
    )


def test_preset_cycle_is_refused(in_tmp: Path, preset_dir: Path) -> None:
    (preset_dir / "a.toml").write_text("extends = 'b'\n")
    (preset_dir / "b.toml").write_text("extends = 'a'\n")

    message = config_error("extends = 'a'\n")

    assert message == "preset:b: extends: presets extend each other in a cycle: a -> b -> a"


def test_error_in_a_preset_names_the_preset(in_tmp: Path, preset_dir: Path) -> None:
    (preset_dir / "broken.toml").write_text("mode = 'loud'\n")

    message = config_error("extends = 'broken'\n")

    assert message == f"preset:broken: mode: expected {MODES}, got 'loud'"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CONVFIX_MODE", "loud", MODES),
        ("CONVFIX_MODE", "OFF", MODES),
        ("CONVFIX_EVENTS_FORMAT", "xml", "one of json, console"),
        ("CONVFIX_EVENTS_PATH", "x{user}", "stderr, stdout or a file path"),
    ],
)
def test_bad_environment_value_names_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(env={variable: value}, cwd=tmp_path)

    message = str(raised.value)
    assert message.startswith(f"environment: {variable}: expected {expected}")
    assert message.endswith(f", got {value!r}")


# policy_mode


def test_policy_without_own_mode_follows_top_level() -> None:
    assert Config(mode="warn").policy_mode("dtype") == "warn"


def test_policy_own_mode_beats_top_level() -> None:
    policies = PoliciesConfig(dtype=DtypePolicyConfig(mode="strict"))

    assert Config(mode="warn", policies=policies).policy_mode("dtype") == "strict"


def test_layout_is_off_until_turned_on() -> None:
    assert Config(mode="fix").policy_mode("layout") == "off"


def test_top_level_off_turns_off_even_policies_with_their_own_mode() -> None:
    config = apply_overrides(Config(mode="off"), policies=dict.fromkeys(POLICY_NAMES, "fix"))

    assert {config.policy_mode(name) for name in POLICY_NAMES} == {"off"}


def test_policy_names_are_the_policies_tables() -> None:
    assert tuple(PoliciesConfig.__struct_fields__) == POLICY_NAMES


def test_unknown_policy_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown policy 'colour'"):
        Config().policy_mode("colour")


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().mode = "off"  # type: ignore[misc]


# apply_overrides


def test_override_sets_top_level_mode() -> None:
    assert apply_overrides(Config(), mode="strict").mode == "strict"


def test_override_by_name_sets_a_policy_mode() -> None:
    config = apply_overrides(Config(), policies={"dtype": "strict"})

    assert config.policies.dtype.mode == "strict"


def test_override_by_table_sets_policy_keys() -> None:
    config = apply_overrides(Config(), policies={"dtype": {"mode": "fix", "target": "input"}})

    assert config.policies.dtype == DtypePolicyConfig(mode="fix", target="input")


def test_override_keeps_everything_it_does_not_mention(tmp_path: Path) -> None:
    # given a loaded config that differs from the defaults
    (tmp_path / "convfix.toml").write_text('extends = "aggressive"\n')
    base = load_config(env={}, cwd=tmp_path)

    # when one policy is overridden
    config = apply_overrides(base, policies={"dtype": "warn"})

    # then only that changed, and the original is as it was
    assert config == msgspec.structs.replace(
        base, policies=msgspec.structs.replace(base.policies, dtype=DtypePolicyConfig(mode="warn"))
    )
    assert base.policies.dtype.mode is None


def test_override_of_unknown_policy_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^override: policies\.colour: unknown key"):
        apply_overrides(Config(), policies={"colour": "fix"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "loud"}, f"override: mode: expected {MODES}, got 'loud'"),
        (
            {"policies": {"dtype": "loud"}},
            f"override: policies.dtype.mode: expected {MODES}, got 'loud'",
        ),
        (
            {"policies": {"dtype": {"colour": 1}}},
            "override: policies.dtype.colour: unknown key (valid keys: mode, output, target)",
        ),
        (
            {"policies": {"split_batch": {"factor": 2}}},
            "override: policies.split_batch.factor: expected a number in (0, 1), got 2",
        ),
    ],
)
def test_bad_override_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        apply_overrides(Config(), **kwargs)  # type: ignore[arg-type]

    assert str(raised.value) == message


def test_override_accepts_any_mapping() -> None:
    table = MappingProxyType({"target": "input"})

    config = apply_overrides(Config(), policies=MappingProxyType({"dtype": table}))

    assert config.policies.dtype.target == "input"


@given(st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True))
def test_any_factor_inside_zero_one_is_kept(factor: float) -> None:
    config = apply_overrides(Config(), policies={"split_batch": {"factor": factor}})

    assert config.policies.split_batch.factor == factor


@given(st.floats().filter(lambda f: not 0 < f < 1))
def test_any_factor_outside_zero_one_is_refused(factor: float) -> None:
    with pytest.raises(ConfigError) as raised:
        apply_overrides(Config(), policies={"split_batch": {"factor": factor}})

    assert str(raised.value) == (
        f"override: policies.split_batch.factor: expected a number in (0, 1), got {factor!r}"
    )


@given(st.text(min_size=1).filter(lambda text: "{" not in text and "}" not in text))
def test_any_events_path_without_braces_is_accepted(empty_dir: Path, path: str) -> None:
    # CONVFIX_EVENTS_PATH goes through the same checks as a file's events.path
    config = load_config(env={"CONVFIX_EVENTS_PATH": path}, cwd=empty_dir)

    assert config.events.path == path


# Import cost


@pytest.mark.subprocess
def test_importing_config_does_not_import_tensorflow() -> None:
    code = "import sys, convfix.config; print('tensorflow' in sys.modules)"

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )

    assert result.stdout.strip() == "False"
