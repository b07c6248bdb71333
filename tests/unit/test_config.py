"""Settings: environment, overrides, and errors that name the setting."""

import pytest

from stream.settings import ConfigError, Settings, parse_broker_url


def test_defaults_are_valid():
    s = Settings().validate()
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.topics.events == "inference-events"


def test_environment_then_overrides():
    env = {
        "STREAM_MONITOR_BROKER": "kafka://k1:9092,k2:9092",
        "STREAM_MONITOR_WINDOW_S": "30",
        "STREAM_MONITOR_TOPIC_ALERTS": "team-alerts",
    }
    s = Settings.from_env(env, partitions=8, topic_events="events-v2")
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert s.detection.window_s == 30.0
    assert s.partitions == 8
    assert s.topics.alerts == "team-alerts"
    assert s.topics.events == "events-v2"


def test_none_override_keeps_environment_value():
    s = Settings.from_env({"STREAM_MONITOR_PARTITIONS": "6"}, partitions=None)
    assert s.partitions == 6


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"partitions": 0}, "partitions"),
        ({"web_port": 70000}, "web_port"),
        ({"window_s": -1.0}, "window_s"),
        ({"app_id": "has space"}, "app_id"),
        ({"topic_alerts": "bad topic!"}, "topics.alerts"),
        ({"broker": "http://localhost:9092"}, "broker"),
        ({"broker": "kafka://host"}, "broker"),
        ({"broker": "kafka://host:99999"}, "broker"),
    ],
)
def test_bad_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({}, **overrides)
    assert str(info.value).startswith(field)


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="STREAM_MONITOR_WINDOW_S"):
        Settings.from_env({"STREAM_MONITOR_WINDOW_S": "soon"})


def test_broker_url_forms():
    assert parse_broker_url("kafka://a:1;kafka://b:2") == "a:1,b:2"
    assert parse_broker_url(" kafka://localhost:9092/ ") == "localhost:9092"
    with pytest.raises(ConfigError):
        parse_broker_url("")


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("off", False), ("", False)])
def test_yes_no_settings(raw, expected):
    assert Settings.from_env({"STREAM_MONITOR_SINGLE_RECORD_BATCHES": raw}).single_record_batches is expected


def test_bad_yes_no_setting_names_the_variable():
    with pytest.raises(ConfigError, match="STREAM_MONITOR_SINGLE_RECORD_BATCHES"):
        Settings.from_env({"STREAM_MONITOR_SINGLE_RECORD_BATCHES": "maybe"})


def test_window_settings_are_checked():
    with pytest.raises(ConfigError, match="hopping_s"):
        Settings.from_env({}, hopping_s=90.0, hop_s=60.0)
    with pytest.raises(ConfigError, match="window_s"):
        Settings.from_env({}, window_s=7.5)
    with pytest.raises(ConfigError, match="profile_dir"):
        Settings.from_env({}, profile_dir="/no/such/folder")
