"""River's drift detectors and scipy's linear filter, without the packages that hold them.

``from river import drift`` runs ``river/drift/__init__.py``, which imports
every detector of the module (KSWIN brings ``scipy.stats``) and river's
datasets (``scipy.io``, ``scipy.sparse``); ``from scipy import signal``
imports ``scipy.stats`` too, for its peak finding. The detectors use ADWIN,
Page-Hinkley and one linear filter of all that, and the rest was a third of
what a worker holds before its first record (``python -m
bench.import_memory``). So this module loads the two files of river that
define ADWIN and Page-Hinkley, and the compiled module behind
``scipy.signal.lfilter``, each under its own name, without the package's
``__init__``. A later ``import river.drift`` or ``import scipy.signal``
(KSWIN, or a test) finds them already loaded and uses the same objects.

These are private layouts of the two libraries, so they are checked here, at
import: a river or scipy that moved them stops the program with one line.
KSWIN is taken from ``river.drift`` itself, when a rule asks for it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import river
import scipy
from river.base import DriftDetector

from stream.settings.common import InstallError


class LibraryLayoutChanged(InstallError):
    """The installed river or scipy no longer has a module where this file loads it from."""


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    # The loader follows the file's suffix: source, or a compiled extension.
    spec = importlib.util.spec_from_file_location(name, path) if path.is_file() else None
    if spec is None or spec.loader is None:
        raise LibraryLayoutChanged(
            f"{name} is not at {path} in this install (river {river.__version__}, scipy {scipy.__version__}); "
            "install the versions pyproject.toml pins"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _river_drift_detector(module: str, name: str) -> type[DriftDetector]:
    loaded = _load(f"river.drift.{module}", Path(river.__file__).parent / "drift" / f"{module}.py")
    detector = getattr(loaded, name, None)
    if not (isinstance(detector, type) and issubclass(detector, DriftDetector)):
        raise LibraryLayoutChanged(
            f"river.drift.{module} has no drift detector {name} (river {river.__version__}); "
            "install the version pyproject.toml pins"
        )
    return detector


def _scipy_linear_filter() -> Callable[..., Any]:
    folder = Path(scipy.__file__).parent / "signal"
    names = {f"_sigtools{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES}
    compiled = next((p for p in folder.glob("_sigtools.*") if p.name in names), None)
    routine = None if compiled is None else getattr(_load("scipy.signal._sigtools", compiled), "_linear_filter", None)
    if routine is None:
        raise LibraryLayoutChanged(
            f"scipy.signal has no compiled _sigtools._linear_filter in {folder} (scipy {scipy.__version__}); "
            "install the version pyproject.toml pins"
        )
    return routine


ADWIN = _river_drift_detector("adwin", "ADWIN")
PageHinkley = _river_drift_detector("page_hinkley", "PageHinkley")
_linear_filter = _scipy_linear_filter()


def kswin() -> type[DriftDetector]:
    """River's KSWIN, from ``river.drift`` itself (with ``scipy.stats``): only a rule configured with it pays."""
    from river.drift import KSWIN

    return KSWIN


def smooth(gain: float, keep: float, x: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """``y[n] = gain * x[n] + c[n - 1]``, ``c[n] = keep * y[n]``, along the last axis, from ``c[-1] = carry``.

    What ``scipy.signal.lfilter([gain], [1.0, -keep], x, axis=-1, zi=carry)[0]``
    returns, bit for bit: its compiled routine, without the checks and
    conversions of the Python function. ``carry`` has the shape of ``x`` with
    1 in the last axis.

    >>> smooth(0.5, 0.5, np.array([2.0, 2.0, 2.0]), np.array([0.0])).tolist()
    [1.0, 1.5, 1.75]
    """
    b = np.array([gain])
    a = np.array([1.0, -keep])
    return _linear_filter(b, a, np.asarray(x, dtype=np.float64), -1, np.asarray(carry, dtype=np.float64))[0]


def _check_linear_filter() -> None:
    """The compiled filter, on a few values, gives the recursion in lfilter's order of operations."""
    gain, keep = 0.3, 0.7
    x = np.array([[1.0, -2.5, 1e9, 3.25], [0.0, 7.0, -1e-9, 2.0]])
    start = np.array([[0.5], [-4.0]])
    expected = np.empty_like(x)
    for row in range(x.shape[0]):
        carry = float(start[row, 0])
        for i, value in enumerate(x[row].tolist()):
            expected[row, i] = out = gain * value + carry
            carry = keep * out
    try:
        found = smooth(gain, keep, x, start)
    except Exception as exc:
        raise LibraryLayoutChanged(
            f"scipy.signal._sigtools._linear_filter no longer takes (b, a, x, axis, zi): {exc} "
            f"(scipy {scipy.__version__}); install the version pyproject.toml pins"
        ) from None
    if not np.array_equal(found, expected):
        raise LibraryLayoutChanged(
            f"scipy.signal._sigtools._linear_filter no longer filters as lfilter did (scipy {scipy.__version__}); "
            "install the version pyproject.toml pins"
        )


_check_linear_filter()
