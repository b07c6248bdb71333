"""Property tests: whatever configuration arrives, the result is settings or a ConfigError naming the field.

Never a traceback from deep inside: a typo in an environment variable or a
monitor file must stop the program with one line an operator can act on.
"""

import dataclasses
import tomllib

import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.monitoring.monitor_file import MonitorConfig
from stream.settings import ConfigError, Settings

FIELDS = [f.name for f in dataclasses.fields(Settings) if f.name != "topics"]
env_values = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "-1", "1e309", "nan", "inf", "-inf", "1.5", "10", "yes", "kafka://h:1", "", " 3 "]),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), env_values, min_size=1, max_size=3))
def test_any_environment_gives_settings_or_an_error_naming_a_field(values):
    env = {f"STREAM_MONITOR_{name.upper()}": raw for name, raw in values.items()}
    try:
        loaded = Settings.from_env(env)
    except ConfigError as exc:
        assert any(str(exc).startswith(name) for name in FIELDS), str(exc)
        return
    for name in values:
        value = getattr(loaded, name)
        if isinstance(value, float):
            assert value == value and abs(value) != float("inf"), (name, value)


detector_names = st.sampled_from(["zscore", "iqr", "adwin", "kswin", "page_hinkley", "nope", "a.b:C"])
param_values = st.one_of(
    st.integers(-5, 5000),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
params = st.dictionaries(
    st.sampled_from(["threshold", "k", "alpha", "window_size", "stat_size", "warmup", "direction", "delta", "bogus"]),
    param_values,
    max_size=3,
)
signals = st.sampled_from(["latency_ms", "error_rate", "features.*", "features.x", "confidence", "nonsense"])


@st.composite
def monitor_tables(draw):
    chosen = draw(st.lists(detector_names, max_size=3, unique=True))
    spec = {"detectors": chosen}
    for name in chosen:
        if draw(st.booleans()):
            spec[name] = draw(params)
    table = {"signals": {draw(signals): spec}}
    if draw(st.booleans()):
        table["reference_drift"] = draw(st.dictionaries(st.sampled_from(["alpha", "min_psi", "x"]), param_values))
    if draw(st.booleans()):
        table["performance"] = draw(st.dictionaries(st.sampled_from(["metric", "margin", "window"]), param_values))
    if draw(st.booleans()):
        table["multivariate"] = {"detectors": draw(st.sampled_from([[], ["mahalanobis"], ["other"]]))}
    where = draw(st.sampled_from(["defaults", "models", "other"]))
    return {where: table} if where != "models" else {"models": {"fraud": table}}


@settings(max_examples=400, deadline=None)
@given(monitor_tables())
def test_any_monitor_file_loads_or_names_the_setting(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("monitors") / "monitors.toml"
    path.write_text(tomli_w.dumps(data))
    assert tomllib.loads(path.read_text()) == data
    try:
        MonitorConfig.load(path)
    except ConfigError as exc:
        message = str(exc)
        # The message starts at the setting's path (or the file, for a top-level mistake).
        assert message.startswith(("defaults", "models.fraud", str(path))), message
