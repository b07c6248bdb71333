"""The worker loads without scipy.stats, river.drift and OpenDP, and with the same objects as those packages."""

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_the_worker_imports_neither_scipy_stats_nor_river_drift():
    loaded = _modules_after("import stream.worker.app")
    assert "stream.detectors.stream_drift" in loaded
    assert not loaded & {"scipy.stats", "scipy.signal", "river.drift", "river.datasets", "opendp"}


def test_opendp_comes_with_the_first_noisy_counts():
    loaded = _modules_after(
        "from stream.privacy.noise import SliceNoise\n"
        "import sys; assert 'opendp' not in sys.modules\n"
        "SliceNoise(epsilon_per_window=1.0, budget_per_day=2.0)"
    )
    assert "opendp" in loaded


def test_a_later_import_of_the_packages_uses_the_same_detectors_and_filter():
    loaded = _modules_after(
        "from stream.detectors import lean_imports\n"
        "from river import drift\n"
        "from scipy.signal import _sigtools\n"
        "assert drift.ADWIN is lean_imports.ADWIN and drift.PageHinkley is lean_imports.PageHinkley\n"
        "assert _sigtools._linear_filter is lean_imports._linear_filter"
    )
    assert "river.drift" in loaded


def test_a_rule_with_kswin_loads_river_drift_then():
    loaded = _modules_after(
        "from stream.detectors.stream_drift import StreamDriftRule\n"
        "import sys; assert 'river.drift' not in sys.modules\n"
        "rule = StreamDriftRule('latency_ms', 'kswin')\n"
        "assert type(rule.detector).__name__ == 'KSWIN'"
    )
    assert "scipy.stats" in loaded


def test_a_library_that_moved_a_file_stops_with_one_line(tmp_path):
    from stream.detectors.lean_imports import LibraryLayoutChanged, _load
    from stream.settings.common import InstallError

    with pytest.raises(LibraryLayoutChanged) as caught:
        _load("river.drift.not_there", tmp_path / "not_there.py")
    assert isinstance(caught.value, InstallError)
    assert "\n" not in str(caught.value) and "not_there" in str(caught.value)
    assert "river.drift.not_there" not in sys.modules
