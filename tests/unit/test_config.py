"""Settings: environment, overrides, and errors that name the setting."""

import os
import subprocess
import sys

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
        ({"join_store": "redis"}, "join_store"),
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


def test_each_worker_process_has_a_data_folder_of_its_own_unless_one_is_set():
    # RocksDB locks its files: two workers sharing a folder could not both open the join.
    settings = Settings.from_env({}, app_id="a")
    assert settings.data_path == os.path.join(settings.data_root, str(os.getpid()))
    assert Settings.from_env({}, app_id="b").data_root != settings.data_root
    assert Settings.from_env({}, data_dir="/var/lib/sm").data_path == "/var/lib/sm"


def test_folders_of_stopped_workers_are_removed_and_a_running_ones_kept(tmp_path):
    from stream.worker.app import remove_stopped_workers_folders

    stopped = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name in (stopped.stdout.strip(), str(os.getpid()), "not-a-worker"):
        (tmp_path / name).mkdir()
    assert remove_stopped_workers_folders(str(tmp_path)) == [stopped.stdout.strip()]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([str(os.getpid()), "not-a-worker"])
    assert remove_stopped_workers_folders(str(tmp_path / "absent")) == []
