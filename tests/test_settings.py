"""graphsvc.settings: one registry of GRAPHSVC_* variables, and the CLIs built from it."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphsvc import settings
from graphsvc.errors import ConfigError
from graphsvc.settings import Settings, read

ROOT = Path(__file__).resolve().parents[1]


def test_every_graphsvc_variable_the_code_names_is_registered_once():
    named = set()
    for path in list((ROOT / "graphsvc").rglob("*.py")) + list((ROOT / "jobs").rglob("*.py")):
        named |= set(re.findall(r"GRAPHSVC_[A-Z_]+[A-Z]", path.read_text()))
    registered = [v.name for v in settings.VARIABLES]
    assert len(registered) == len(set(registered))
    assert named - set(registered) == set()
    assert len(registered) == 26


def test_read_parses_the_kind_and_falls_back_to_the_default():
    assert read(settings.PORT, {"GRAPHSVC_PORT": "9000"}) == 9000
    assert read(settings.PORT, {"GRAPHSVC_PORT": "  "}) == 8080
    assert read(settings.STORE_LOCK_WAIT, {}) == 30.0
    assert read(settings.INDEX_DIR, {"GRAPHSVC_INDEX_DIR": "/x/y"}) == Path("/x/y")
    assert read(settings.TRITON_SHM, {"GRAPHSVC_TRITON_SHM": "OFF"}) == "off"


def test_an_unusable_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"GRAPHSVC_PORT=eighty is not a valid int"):
        read(settings.PORT, {"GRAPHSVC_PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"GRAPHSVC_TRITON_SHM must be auto, on or off, not 'maybe'"):
        read(settings.TRITON_SHM, {"GRAPHSVC_TRITON_SHM": "maybe"})


def test_settings_take_the_environment_then_the_flags():
    env = {"GRAPHSVC_STORE": "a.duckdb", "GRAPHSVC_INDEX_DIR": "idx"}
    base = Settings.from_env(env)
    assert (base.store, base.index_dir, base.triton_url) == ("a.duckdb", Path("idx"), settings.TRITON_URL.default)
    assert base.with_overrides(store="b.duckdb", index_dir=None).store == "b.duckdb"
    assert base.with_overrides(index_dir="other").index_dir == Path("other")


@pytest.mark.parametrize("variable", [settings.STORE, settings.INDEX_DIR, settings.TRITON_URL,
                                      settings.ARANGO_PASSWORD_FILE])
def test_cli_help_shows_each_group_option_with_its_variable(variable):
    from jobs.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["--help"]).output.split())
    assert f"[env {variable.name}]" in text


def test_the_readme_lists_every_variable():
    readme = (ROOT / "README.md").read_text()
    assert [v.name for v in settings.VARIABLES if f"| `{v.name}` |" not in readme] == []
