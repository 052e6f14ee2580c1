import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance import config
from appliance.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_work_out_of_the_box():
    s = config.load(None, environ={})
    assert s.web.port == 8080 and s.web.host == "127.0.0.1"
    assert s.retention.read_days == 365
    assert s.storage.synchronous == "FULL"
    assert "STOLEN-VEH" in s.purpose_codes()
    assert s.db_path.name == "waypost.db"


def test_file_and_environment_overrides(tmp_path):
    f = tmp_path / "waypost.toml"
    f.write_text('[web]\nport = 9000\n[post]\nid = "post-7"\n[retention]\nread_days = 30\n')
    s = config.load(
        f,
        environ={"WAYPOST_WEB__PORT": "9100", "WAYPOST_SYNC__INCLUDE_FRAMES": "false", "WAYPOST_WEB__HOST": "0.0.0.0"},
    )
    assert s.web.port == 9100  # environment wins over the file
    assert s.post.id == "post-7"  # file wins over the default
    assert s.retention.read_days == 30
    assert s.sync.include_frames is False
    assert s.web.host == "0.0.0.0"  # not TOML, so taken as a plain string


def test_every_problem_is_listed_with_its_key_path(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(
        '[web]\nport = 70000\nthreads = "many"\ncolour = "blue"\n[retention]\nread_days = 0\n[nonsense]\nx = 1\n'
    )
    with pytest.raises(config.ConfigError) as err:
        config.load(f, environ={"WAYPOST_CAPTURE__TYPE": "webcam", "WAYPOST_BOGUS__KEY": "1"})
    paths = [p for p, _ in err.value.problems]
    assert "web.port" in paths
    assert "web.threads" in paths
    assert "web.colour" in paths
    assert "retention.read_days" in paths
    assert "nonsense" in paths
    assert "capture.type (environment variable WAYPOST_CAPTURE__TYPE)" in paths  # named where it was set
    assert "WAYPOST_BOGUS__KEY" in paths
    messages = dict(err.value.problems)
    assert messages["web.colour"] == "unknown key"
    assert "65535" in messages["web.port"] and "70000" in messages["web.port"]


def test_text_keys_from_the_environment_are_taken_as_text():
    settings = config.load(
        None,
        environ={
            "WAYPOST_POST__ID": "12",
            "WAYPOST_POST__NAME": "nan",
            "WAYPOST_POST__CAMERA_ID": "1",
            "WAYPOST_WEB__PORT": "8081",
        },
    )
    assert (settings.post.id, settings.post.name, settings.post.camera_id) == ("12", "nan", "1")
    assert settings.web.port == 8081  # numbers, booleans and lists are still read as TOML


def test_cross_field_and_custom_checks():
    with pytest.raises(config.ConfigError) as err:
        config.load(
            None,
            environ={
                "WAYPOST_SYNC__ENABLED": "true",
                "WAYPOST_POST__TIMEZONE": "Mars/Olympus",
                "WAYPOST_AUDIT__CASE_NUMBER_PATTERN": "([unclosed",
            },
        )
    text = str(err.value)
    assert "hq_url" in text and "Mars/Olympus" in text and "regular expression" in text


def test_not_toml_is_a_clear_error(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("[web\nport = 1")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(f, environ={})
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(tmp_path / "missing.toml", environ={})


def test_config_check_command(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[post]\nname = "Main St & 5th"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("[web]\nport = -1\n[storage]\nsynchronous = 'OFF'\n")
    runner = CliRunner()
    ok = runner.invoke(main, ["config", "check", str(good)], env={"WAYPOST_CONFIG": ""})
    assert ok.exit_code == 0, ok.output
    assert "configuration OK" in ok.output
    res = runner.invoke(main, ["config", "check", str(bad)], env={"WAYPOST_CONFIG": ""})
    assert res.exit_code == 1
    assert "web.port" in res.output and "storage.synchronous" in res.output
    assert "2 configuration problem(s)" in res.output


def test_readme_documents_every_key_exactly():
    """The README's table is `waypost config docs`; regenerate it when a key changes."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- config-table:start -->\n(.*?)<!-- config-table:end -->", readme, re.S)
    assert block, "README.md lacks the config-table markers"
    assert block.group(1) == config.docs_markdown(), "README config table is stale: paste `waypost config docs`"
    for key, *_ in config.describe():
        assert f"`{key}`" in block.group(1)
