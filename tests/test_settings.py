"""Configuration loading: the TOML file, EDGE_AGENT_* environment overrides, errors.

These pin what users see through `load_settings`: which variables are read, how
they merge with the file, and how a bad one is reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, get_args

import pytest

from edge_agent.app.mqtt_wiring import mqtt_options
from edge_agent.config.kinds import CAMERA_KINDS, SENSOR_KINDS
from edge_agent.config.settings import (
    CameraSource,
    SensorSource,
    Settings,
    json_schema,
    load_settings,
    redacted,
)
from edge_agent.errors import ConfigError

CONFIG = """
device_id = "filedev"
log_level = "warning"

[mqtt]
host = "filehost"
port = 1884
username = "u"
password = "hunter2"

[runtime]
runtime = "litert"
num_threads = 2

[[pipelines]]
name = "cam"
model = "/models/cam.tflite"

[pipelines.source]
kind = "files"
pattern = "/frames/*.jpg"

[pipelines.policy]
kind = "classification"
"""

PIPELINE: dict[str, Any] = {
    "name": "other",
    "model": "/models/other.tflite",
    "source": {"kind": "files", "pattern": "/other/*.jpg"},
    "policy": {"kind": "threshold"},
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean slate: no EDGE_AGENT_* variable from the calling shell or CI."""
    for name in list(os.environ):
        if name.upper().startswith("EDGE_AGENT_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def load(path: Path, text: str | None = None) -> Settings:
    if text is not None:
        path.write_text(text, encoding="utf-8")
    return load_settings(path)


def refused(path: Path | None, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, overrides)
    return str(caught.value)


def test_the_file_alone(env: pytest.MonkeyPatch, config: Path) -> None:
    settings = load(config)
    assert settings.device_id == "filedev"
    assert settings.mqtt.host == "filehost"
    assert settings.mqtt.port == 1884
    assert settings.runtime.runtime == "litert"
    assert [p.name for p in settings.pipelines] == ["cam"]


def test_a_variable_overrides_a_top_level_key(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_DEVICE_ID", "gate-2")
    env.setenv("EDGE_AGENT_LOG_LEVEL", "debug")
    env.setenv("EDGE_AGENT_STATE_DIR", "/srv/agent")
    settings = load(config)
    assert settings.device_id == "gate-2"
    assert settings.log_level == "debug"
    assert settings.state_dir == Path("/srv/agent")


def test_a_variable_overrides_a_key_given_in_code(env: pytest.MonkeyPatch) -> None:
    env.setenv("EDGE_AGENT_DEVICE_ID", "from-env")
    settings = load_settings(None, {"device_id": "from-code", "pipelines": [PIPELINE]})
    assert settings.device_id == "from-env"


def test_a_nested_variable_overrides_one_key_of_a_table(
    env: pytest.MonkeyPatch, config: Path
) -> None:
    env.setenv("EDGE_AGENT_MQTT__HOST", "broker.lan")
    env.setenv("EDGE_AGENT_MQTT__PORT", "8883")
    env.setenv("EDGE_AGENT_HOMEASSISTANT__ENABLED", "true")
    env.setenv("EDGE_AGENT_OUTBOX__TTL", "1.5")
    settings = load(config)
    assert settings.mqtt.host == "broker.lan"
    assert settings.mqtt.port == 8883
    assert settings.mqtt.username == "u"  # the rest of the file's table stays
    assert settings.homeassistant.enabled is True
    assert settings.outbox.ttl == 1.5


def test_a_nested_variable_creates_an_optional_table(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__TLS__CA_FILE", "/etc/ca.pem")
    env.setenv("EDGE_AGENT_MQTT__TLS__INSECURE", "true")
    tls = load(config).mqtt.tls
    assert tls is not None
    assert tls.ca_file == Path("/etc/ca.pem")
    assert tls.insecure is True


def test_an_optional_table_set_to_json(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__TLS", "{}")
    assert load(config).mqtt.tls is not None
    env.delenv("EDGE_AGENT_MQTT__TLS")
    assert load(config, CONFIG.replace("[runtime]", "[mqtt.tls]\n\n[runtime]")).mqtt.tls
    env.setenv("EDGE_AGENT_MQTT__TLS", "null")
    assert load(config).mqtt.tls is None  # the file's TLS turned off


def test_variable_names_are_case_insensitive(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("edge_agent_mqtt__host", "lower.lan")
    env.setenv("Edge_Agent_Device_Id", "mixed")
    settings = load(config)
    assert settings.mqtt.host == "lower.lan"
    assert settings.device_id == "mixed"


def test_values_are_case_sensitive(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_LOG_LEVEL", "DEBUG")
    assert "log_level: Input should be 'debug', 'info', 'warning' or 'error'" in refused(config)


def test_only_prefixed_variables_count(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("MQTT__HOST", "no-prefix")
    env.setenv("DEVICE_ID", "no-prefix")
    env.setenv("EDGE_AGENT_MQTT_HOST", "one-underscore")
    settings = load(config)
    assert settings.mqtt.host == "filehost"
    assert settings.device_id == "filedev"


def test_an_empty_variable_is_an_empty_value(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__HOST", "")
    assert load(config).mqtt.host == ""


def test_a_plain_value_is_not_json_decoded(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__HOST", '{"a": 1}')
    env.setenv("EDGE_AGENT_MQTT__CLIENT_ID", "null")
    env.setenv("EDGE_AGENT_DEVICE_ID", '"quoted"')
    settings = load(config)
    assert settings.mqtt.host == '{"a": 1}'
    assert settings.mqtt.client_id == "null"
    assert settings.device_id == '"quoted"'


def test_a_table_as_json_merges_into_the_file(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_RUNTIME", '{"runtime": "tflite-runtime"}')
    runtime = load(config).runtime
    assert runtime.runtime == "tflite-runtime"
    assert runtime.num_threads == 2  # from the file


def test_a_nested_variable_wins_over_its_table_as_json(
    env: pytest.MonkeyPatch, config: Path
) -> None:
    env.setenv("EDGE_AGENT_MQTT", '{"host": "json.lan", "port": 1000}')
    env.setenv("EDGE_AGENT_MQTT__PORT", "2000")
    mqtt = load(config).mqtt
    assert (mqtt.host, mqtt.port, mqtt.username) == ("json.lan", 2000, "u")


def test_keys_inside_a_json_table_are_case_insensitive(
    env: pytest.MonkeyPatch, config: Path
) -> None:
    env.setenv("EDGE_AGENT_MQTT", '{"HOST": "json.lan", "TLS": {"ALPN": ["x-amzn-mqtt-ca"]}}')
    mqtt = load(config).mqtt
    assert mqtt.host == "json.lan"
    assert mqtt.tls is not None
    assert mqtt.tls.alpn == ["x-amzn-mqtt-ca"]


def test_a_json_null_table_is_ignored(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_RUNTIME", "null")
    assert load(config).runtime.runtime == "litert"


def test_lists_as_json(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_UPDATE__KEYS", '["/keys/a.pem", "/keys/b.pem"]')
    env.setenv("EDGE_AGENT_MQTT__TLS__ALPN", '["h2"]')
    settings = load(config)
    assert settings.update.keys == [Path("/keys/a.pem"), Path("/keys/b.pem")]
    assert settings.mqtt.tls is not None
    assert settings.mqtt.tls.alpn == ["h2"]


def test_the_pipelines_as_json_replace_the_files(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_PIPELINES", json.dumps([PIPELINE]))
    pipelines = load(config).pipelines
    assert [p.name for p in pipelines] == ["other"]
    assert pipelines[0].policy.kind == "threshold"


def test_pipelines_only_from_the_environment(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_PIPELINES", json.dumps([PIPELINE]))
    assert [p.name for p in load(config, 'device_id = "x"\n').pipelines] == ["other"]


def test_one_key_of_a_pipeline_cannot_be_overridden(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_PIPELINES__0__NAME", "renamed")
    assert "pipelines: Input should be a valid list" in refused(config)


def test_a_bad_json_value_names_the_variable(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_RUNTIME", "tflite")
    message = refused(config)
    assert message.startswith("environment: ")
    assert "EDGE_AGENT_RUNTIME" in message
    assert "EDGE_AGENT_RUNTIME__RUNTIME=litert" in message  # how to set one key


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("EDGE_AGENT_PIPELINES", "nope", "pipelines"),
        ("EDGE_AGENT_MQTT", "", "mqtt"),
        ("EDGE_AGENT_UPDATE__KEYS", "/keys/a.pem", "update"),
        ("EDGE_AGENT_MQTT__TLS__ALPN", "x-amzn-mqtt-ca", "mqtt"),
    ],
)
def test_a_bad_json_value_is_a_config_error(
    env: pytest.MonkeyPatch, config: Path, name: str, value: str, key: str
) -> None:
    env.setenv(name, value)
    message = refused(config)
    assert message.startswith("environment: ")
    assert key in message.lower()
    assert "JSON" in message


def test_an_optional_table_that_is_not_json_is_a_bad_value(
    env: pytest.MonkeyPatch, config: Path
) -> None:
    env.setenv("EDGE_AGENT_MQTT__TLS", "yes")
    assert "mqtt.tls: Input should be a valid dictionary" in refused(config)


def test_a_json_value_of_the_wrong_type(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_RUNTIME", "[1]")
    assert "runtime: Input should be a valid dictionary or instance of" in refused(config)


def test_a_bad_value_is_reported_with_its_key(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__PORT", "x")
    message = refused(config)
    assert message.startswith("invalid configuration:")
    # Named against the variable that set it, not the file (issue #14).
    assert "environment (EDGE_AGENT_MQTT__PORT): mqtt.port: Input should be a valid integer" in (
        message
    )
    assert str(config) not in message


def test_a_bad_value_in_the_file_is_reported_against_the_file(
    env: pytest.MonkeyPatch, config: Path
) -> None:
    env.setenv("EDGE_AGENT_MQTT__HOST", "broker.lan")  # another key of the same table
    text = CONFIG.replace("port = 1884", 'port = "x"')
    assert f"{config}: mqtt.port: Input should be a valid integer" in refused_text(config, text)


def test_a_model_check_sees_the_merged_values(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__PASSWORD_FILE", "/run/credentials/pw")  # the file has password
    assert "mqtt: Value error, password and password_file are mutually exclusive" in refused(config)


def test_an_unknown_nested_variable_is_refused(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__BOGUS", "1")
    assert "mqtt.bogus: unknown key" in refused(config)


def test_an_unknown_key_in_a_json_table_is_refused(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_RUNTIME", '{"bogus": 1}')
    assert "runtime.bogus: unknown key" in refused(config)


def test_an_unknown_top_level_variable_is_ignored(env: pytest.MonkeyPatch, config: Path) -> None:
    # e.g. EDGE_AGENT_TEST_RUNTIME and EDGE_AGENT_FIXTURES, which the test tooling sets
    env.setenv("EDGE_AGENT_BOGUS", "1")
    env.setenv("EDGE_AGENT_BOGUS__KEY", "1")
    env.setenv("EDGE_AGENT_TEST_RUNTIME", "litert")
    assert load(config).device_id == "filedev"


def test_a_secret_from_the_environment(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__PASSWORD", "s3cret")
    settings = load(config)
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret"
    shown = json.dumps(redacted(settings))
    assert "s3cret" not in shown
    assert redacted(settings)["mqtt"]["password"] == "**********"


def test_unknown_keys_in_the_file_are_refused_with_their_path(
    env: pytest.MonkeyPatch, config: Path
) -> None:
    assert f"{config}: bogus: unknown key" in refused_text(config, "bogus = 1\n" + CONFIG)
    nested = CONFIG.replace("[runtime]", "[runtime]\nbogus = 1")
    assert f"{config}: runtime.bogus: unknown key" in refused_text(config, nested)
    tagged = CONFIG.replace('kind = "files"', 'kind = "files"\nbogus = 1')
    assert f"{config}: pipelines.0.source.bogus: unknown key" in refused_text(config, tagged)


def test_pipelines_are_required(env: pytest.MonkeyPatch, config: Path) -> None:
    assert f"{config}: pipelines: Field required" in refused_text(config, 'device_id = "x"\n')


def test_file_errors(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert "no such config file" in refused(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("not toml [", encoding="utf-8")
    assert "not valid TOML" in refused(bad)


def test_the_schema_describes_the_file(env: pytest.MonkeyPatch) -> None:
    schema = json_schema()
    assert schema["title"] == "Settings"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["pipelines"]
    properties = schema["properties"]
    assert list(properties)[:3] == ["device_id", "state_dir", "log_level"]
    assert properties["mqtt"]["$ref"] == "#/$defs/MqttSettings"
    assert properties["mqtt"]["default"]["host"] == "localhost"
    assert schema["$defs"]["MqttSettings"]["additionalProperties"] is False
    assert schema["$defs"]["MqttSettings"]["properties"]["password"]["anyOf"][0] == {
        "format": "password",
        "type": "string",
        "writeOnly": True,
    }


def refused_text(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return refused(path)


def test_qos_can_be_set_from_the_environment(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_MQTT__QOS", "2")
    assert load(config).mqtt.qos == 2
    env.setenv("EDGE_AGENT_MQTT__QOS", "3")
    assert "mqtt.qos" in refused(config)


def test_the_source_kinds_are_the_sources_own_list() -> None:
    """One list of source kinds: the settings' union members are exactly sources.kinds."""

    def kinds(union: object) -> set[str]:
        return {get_args(m.model_fields["kind"].annotation)[0] for m in get_args(union)}

    assert kinds(CameraSource) == set(CAMERA_KINDS)
    assert kinds(SensorSource) == set(SENSOR_KINDS)


# -- fleet settings (issue #17) ------------------------------------------------


def test_fleet_tags_and_their_defaults(env: pytest.MonkeyPatch, config: Path) -> None:
    settings = load(config)
    assert settings.fleet.tags == {}
    assert (settings.mqtt.will_delay, settings.mqtt.first_retry_window) == (30, 10.0)
    assert settings.update.nudge_jitter == 60.0
    text = CONFIG + '\n[fleet]\ntags = {site = "lab", "hw.rev" = "pi4-b"}\n'
    assert load(config, text).fleet.tags == {"site": "lab", "hw.rev": "pi4-b"}


def test_a_fleet_tag_from_the_environment(env: pytest.MonkeyPatch, config: Path) -> None:
    env.setenv("EDGE_AGENT_FLEET__TAGS", '{"site": "depot"}')
    assert load(config).fleet.tags == {"site": "depot"}


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ('{"-site" = "lab"}', "fleet.tags.-site.[key]: String should match pattern"),
        ('{site = ""}', "fleet.tags.site: String should have at least 1 character"),
        ('{site = "' + "x" * 257 + '"}', "fleet.tags.site: String should have at most 256"),
        ("{" + ", ".join(f"k{i} = 'v'" for i in range(17)) + "}", "fleet.tags: Dictionary"),
    ],
)
def test_bad_fleet_tags_are_refused_with_their_key(
    env: pytest.MonkeyPatch, config: Path, tags: str, expected: str
) -> None:
    config.write_text(CONFIG + f"\n[fleet]\ntags = {tags}\n", encoding="utf-8")
    assert expected in refused(config)


@pytest.mark.parametrize(
    ("table", "line", "expected"),
    [
        ("mqtt", "first_retry_window = 61", "first_retry_window must not exceed reconnect_max"),
        ("mqtt", "first_retry_window = -1", "mqtt.first_retry_window: Input should be greater"),
        ("mqtt", "will_delay = 86401", "mqtt.will_delay: Input should be less than or equal"),
        ("update", "nudge_jitter = -1", "update.nudge_jitter: Input should be greater"),
    ],
)
def test_fleet_timing_bounds(
    env: pytest.MonkeyPatch, config: Path, table: str, line: str, expected: str
) -> None:
    text = (
        CONFIG.replace("[mqtt]\n", "[mqtt]\n" + line + "\n")
        if table == "mqtt"
        else (CONFIG + f"\n[update]\n{line}\n")
    )
    config.write_text(text, encoding="utf-8")
    assert expected in refused(config)


def test_the_default_first_retry_window_fits_a_short_reconnect_max(
    env: pytest.MonkeyPatch, config: Path
) -> None:
    text = CONFIG.replace("[mqtt]\n", "[mqtt]\nreconnect_min = 1\nreconnect_max = 2\n")
    settings = load(config, text)
    assert (settings.mqtt.first_retry_window, settings.mqtt.reconnect_max) == (10.0, 2.0)
    # What the publisher is given: the first retry spread over at most reconnect_max.
    assert mqtt_options(settings).first_retry_window == 2.0
