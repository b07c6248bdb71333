"""The monitor file: defaults for everyone, overrides per model, errors that name the setting."""

import math
import random

import pytest

from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.monitor_file import MonitorConfig
from stream.settings import ConfigError, DetectionSettings

GOOD = """
[defaults.signals.latency_ms]
detectors = ["zscore", "iqr"]
iqr = { k = 2.5 }

[defaults.reference_drift]
alpha = 0.0001

[models."fraud-scorer".signals."features.amount"]
detectors = ["kswin"]
kswin = { alpha = 0.0001, window_size = 200, stat_size = 50 }

[models."fraud-scorer".signals."features.*"]
detectors = ["adwin"]

[models."fraud-scorer".performance]
metric = "f1"
margin = 0.03
"""


def load(tmp_path, text):
    path = tmp_path / "monitors.toml"
    path.write_text(text)
    return MonitorConfig.load(path)


def test_defaults_watch_latency_errors_confidence_and_prediction():
    config = MonitorConfig().for_model("anyone")
    assert [n for n, _ in config.detectors_for("latency_ms")] == ["zscore", "level_shift", "cusum"]
    assert config.detectors_for("error_rate") == [("adwin", {"direction": "up"})]
    assert [n for n, _ in config.detectors_for("confidence")] == ["level_shift", "cusum"]
    assert [n for n, _ in config.detectors_for("prediction")] == ["level_shift", "cusum"]


def test_file_overrides_defaults_and_models(tmp_path):
    config = load(tmp_path, GOOD)
    other = config.for_model("recommender")
    assert [n for n, _ in other.detectors_for("latency_ms")] == ["zscore", "iqr"]
    assert other.reference_drift == {"alpha": 0.0001}
    fraud = config.for_model("fraud-scorer")
    assert fraud.detectors_for("features.amount")[0][0] == "kswin"
    assert fraud.detectors_for("features.age") == [("adwin", {})]
    assert fraud.performance == {"metric": "f1", "margin": 0.03}
    # Defaults still apply to the model's other signals.
    assert [n for n, _ in fraud.detectors_for("latency_ms")] == ["zscore", "iqr"]


def test_configured_detectors_run_on_their_signals(tmp_path):
    config = load(tmp_path, GOOD)
    mon = ModelMonitor("fraud-scorer", DetectionSettings(reference_events=100000), config)
    rng = random.Random(0)
    events = [
        {
            "model_version": "1",
            "timestamp": i * 0.01,
            "latency_ms": 10 * math.exp(rng.gauss(0, 0.2)),
            "features": {"amount": rng.gauss(100, 5), "age": rng.gauss(40, 5)},
        }
        for i in range(3000)
    ]
    assert mon.process(events) == []
    rules = mon.versions["1"].signal_rules
    assert set(rules["latency_ms"]) == {"zscore", "iqr"}
    assert set(rules["features.amount"]) == {"kswin"}
    assert set(rules["features.age"]) == {"adwin"}
    shifted = [
        dict(e, timestamp=100 + i * 0.01, features={"amount": e["features"]["amount"] + 40, "age": 40.0})
        for i, e in enumerate(events[:1000])
    ]
    detectors = {(a["signal"], a["detector"]) for a in mon.process(shifted)}
    assert ("features.amount", "kswin") in detectors


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[defaults.signals.latency]\ndetectors = ['zscore']", "defaults.signals.latency: unknown signal"),
        ("[defaults.signals.latency_ms]\ndetectors = ['zscor']", "defaults.signals.latency_ms.zscor: unknown detector"),
        (
            "[defaults.signals.latency_ms]\ndetectors = ['zscore']\nzscore = { treshold = 3 }",
            "defaults.signals.latency_ms.zscore: ",
        ),
        ("[defaults.signals.latency_ms]\ndetectors = ['iqr']\niqr = { k = -1 }", "defaults.signals.latency_ms.iqr: k"),
        (
            "[models.m.signals.error_rate]\ndetectors = ['adwin']\nadwin = { direction = 'sideways' }",
            "models.m.signals.error_rate.adwin",
        ),
        ("[models.m.performance]\nmetric = 'auc'", "models.m.performance.metric"),
        ("[models.m.performance]\nmargin = 'big'", "models.m.performance.margin"),
        ("[models.m]\nthresholds = 1", "models.m: unknown key(s) thresholds"),
        ("[alerts]\nx = 1", "unknown top-level table(s) alerts"),
        ("[defaults.signals.latency_ms]\ndetectors = ['zscore']\niqr = { k = 2 }", "not listed in detectors: iqr"),
        ("not toml at all [", "is not valid TOML"),
    ],
)
def test_mistakes_name_the_setting(tmp_path, text, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert words in str(info.value)


def test_unknown_parameter_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "[defaults.signals.latency_ms]\ndetectors = ['zscore']\nzscore = { treshold = 3 }")
    assert "threshold" in str(info.value) and "min_outliers" in str(info.value)


def test_multivariate_rule_on_by_default_and_can_be_turned_off(tmp_path):
    assert MonitorConfig().for_model("m").multivariate == {}
    off = load(tmp_path, "[defaults.multivariate]\ndetectors = []")
    assert off.for_model("m").multivariate is None
    tuned = load(tmp_path, "[models.m.multivariate]\ndetectors = ['mahalanobis']\nmahalanobis = { quantile = 0.9999 }")
    assert tuned.for_model("m").multivariate == {"quantile": 0.9999}
    with pytest.raises(ConfigError, match=r"models\.m\.multivariate\.detectors"):
        load(tmp_path, "[models.m.multivariate]\ndetectors = ['halfspacetrees']")
    with pytest.raises(ConfigError, match=r"models\.m\.multivariate\.mahalanobis\.qantile"):
        load(tmp_path, "[models.m.multivariate]\ndetectors = ['mahalanobis']\nmahalanobis = { qantile = 0.9 }")


def test_a_detector_of_ones_own_is_loaded_by_module_and_class(tmp_path):
    config = load(
        tmp_path,
        """
[defaults.signals.latency_ms]
detectors = ["zscore", "tests.poison_detector:PoisonRule"]
"tests.poison_detector:PoisonRule" = { poison = 5.0 }
""",
    )
    mon = ModelMonitor("m", DetectionSettings(), config)
    mon.process([{"model_version": "1", "timestamp": 1.0 + i, "latency_ms": 1.0 + i, "error": None} for i in range(3)])
    rule = mon.versions["1"].rules("latency_ms")["tests.poison_detector:PoisonRule"]
    assert rule.seen == 3 and rule.poison == 5.0
    # Lists of plain floats, as the protocol says (the built-in detectors take arrays).
    assert rule.fed == [(list, float)]


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("tests.no_such_module:Rule", "cannot load detector"),
        ("tests.poison_detector:NoSuchClass", "cannot load detector"),
        ("stream.settings:Settings", "lacks update, to_dict, load_state"),
    ],
)
def test_a_detector_that_cannot_be_loaded_names_the_setting(tmp_path, name, complaint):
    text = f'[defaults.signals.latency_ms]\ndetectors = ["{name}"]\n'
    with pytest.raises(ConfigError, match=rf"defaults\.signals\.latency_ms\.{name}: .*{complaint}"):
        load(tmp_path, text)


def test_a_detector_of_ones_own_with_a_wrong_parameter_names_the_setting(tmp_path):
    text = '[defaults.signals.latency_ms]\ndetectors = ["tests.poison_detector:PoisonRule"]\n'
    text += '"tests.poison_detector:PoisonRule" = { dose = 1 }\n'
    with pytest.raises(ConfigError, match=r"PoisonRule: .*dose"):
        load(tmp_path, text)
