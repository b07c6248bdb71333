"""Per-feature statistics: numbers get moments and quantiles, categories counts.

A feature's kind is fixed once: by the reference profile where there is one,
else by the majority of the non-null values in the first batch that has any
(booleans count as categories). The caller keeps the kinds decided and hands
them to every window, so all windows of a model version agree. A value of the
other kind is counted in ``wrong_type`` rather than mixed in, and a missing or
null value in ``missing``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.stats.columns import BatchColumns, feature_names_in, is_numeric, numeric_column
from stream.stats.moments import RunningMoments, add_rows_to_moments
from stream.stats.sketch import QuantileSketch, add_rows_to_sketches

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
OTHER = "__other__"


class NumericStats:
    """Count, missing, moments and a quantile sketch of one numeric feature.

    >>> s = NumericStats()
    >>> s.update_many(np.array([1.0, 2.0, np.nan, 3.0]))
    >>> s.count, s.missing, s.moments.mean
    (4, 1, 2.0)
    """

    kind = "numeric"
    __slots__ = ("count", "missing", "moments", "sketch", "wrong_type")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        self.count = 0
        self.missing = 0
        self.wrong_type = 0
        self.moments = RunningMoments()
        self.sketch = QuantileSketch(relative_accuracy)

    def update_many(self, values: np.ndarray) -> None:
        """Add values; NaN stands for missing."""
        self.count += int(values.size)
        present = values[~np.isnan(values)]
        self.missing += int(values.size - present.size)
        if present.size:
            self.moments.update_many(present)
            self.sketch.update_many(present)

    def merge(self, other: NumericStats) -> NumericStats:
        """Both windows' statistics in one."""
        out = NumericStats(self.sketch.relative_accuracy)
        out.count = self.count + other.count
        out.missing = self.missing + other.missing
        out.wrong_type = self.wrong_type + other.wrong_type
        out.moments = self.moments.merge(other.moments)
        out.sketch = self.sketch.merge(other.sketch)
        return out

    @property
    def missing_rate(self) -> float | None:
        """Share of events without a value."""
        return self.missing / self.count if self.count else None

    def summary(self) -> dict[str, Any]:
        """Readable figures."""
        return {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "missing_rate": self.missing_rate,
            "wrong_type": self.wrong_type,
            **{k: v for k, v in self.moments.summary().items() if k != "count"},
            "quantiles": self.sketch.quantiles(QUANTILES),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "wrong_type": self.wrong_type,
            "moments": self.moments.to_dict(),
            "sketch": self.sketch.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> NumericStats:
        """Rebuild from :meth:`to_dict` output."""
        out = cls()
        out.count, out.missing, out.wrong_type = state["count"], state["missing"], state["wrong_type"]
        out.moments = RunningMoments.from_dict(state["moments"])
        out.sketch = QuantileSketch.from_dict(state["sketch"])
        return out


def add_rows_to_numeric_stats(stats: Sequence[NumericStats], rows: np.ndarray) -> None:
    """``stats[i].update_many(rows[i])`` for every row of a 2-D array (NaN: missing), with the same results.

    Rows of finite values, the usual case, go in together (see
    :func:`stream.stats.sketch.add_rows_to_sketches`); a row with a missing or
    infinite value goes on its own.

    >>> a, b = NumericStats(), NumericStats()
    >>> add_rows_to_numeric_stats([a, b], np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]]))
    >>> (a.count, a.missing, a.moments.mean), (b.count, b.missing, b.moments.mean)
    ((3, 0, 2.0), (3, 1, 5.0))
    """
    finite = np.isfinite(rows).all(axis=1)
    together = []
    for i, stat in enumerate(stats):
        if finite[i] and stat.sketch.log_gamma == stats[0].sketch.log_gamma:
            together.append(i)
        else:
            stat.update_many(rows[i])
    if not together:
        return
    block = rows[together] if len(together) < len(stats) else rows
    taken = [stats[i] for i in together]
    for stat in taken:
        stat.count += int(block.shape[1])
    add_rows_to_moments([stat.moments for stat in taken], block)
    add_rows_to_sketches([stat.sketch for stat in taken], block)


class CategoricalStats:
    """Counts per category, bounded: past ``max_categories`` new values count as other.

    >>> s = CategoricalStats(max_categories=2)
    >>> s.update_many(["DE", "FR", "DE", None, "US"])
    >>> s.counts, s.missing, s.distinct_capped
    ({'DE': 2, 'FR': 1, '__other__': 1}, 1, True)
    """

    kind = "categorical"
    __slots__ = ("count", "counts", "distinct_capped", "max_categories", "missing", "wrong_type")

    def __init__(self, max_categories: int = 100) -> None:
        self.count = 0
        self.missing = 0
        self.wrong_type = 0
        self.max_categories = max_categories
        self.counts: dict[str, int] = {}
        self.distinct_capped = False

    def update_many(self, values: list[Any]) -> None:
        """Add values; None stands for missing."""
        try:
            # Each distinct value once, in order of first appearance, with how often it came: the
            # same counts and the same categories admitted under the cap as value by value, since
            # a category admitted stays and one refused is refused for the rest of the batch.
            # Keyed by type too: True == 1 == 1.0 as keys, but they are three categories.
            distinct = Counter(zip(map(type, values), values, strict=True))
        except TypeError:  # an unhashable value (a list or an object)
            distinct = None
        # 0.0 and -0.0 are one key but two categories.
        if distinct is None or (float, 0.0) in distinct:
            for value in values:
                self._add(value, 1)
        else:
            for (_, value), times in distinct.items():
                self._add(value, times)

    def _add(self, value: Any, times: int) -> None:
        self.count += times
        if value is None:
            self.missing += times
            return
        counts = self.counts
        key = category(value)
        if key in counts:
            counts[key] += times
        elif len(counts) - (OTHER in counts) < self.max_categories:
            counts[key] = times
        else:
            self.distinct_capped = True
            counts[OTHER] = counts.get(OTHER, 0) + times

    def merge(self, other: CategoricalStats) -> CategoricalStats:
        """Both windows' counts in one (still bounded)."""
        out = CategoricalStats(max(self.max_categories, other.max_categories))
        out.count = self.count + other.count
        out.missing = self.missing + other.missing
        out.wrong_type = self.wrong_type + other.wrong_type
        out.distinct_capped = self.distinct_capped or other.distinct_capped
        merged = dict(self.counts)
        for k, v in other.counts.items():
            merged[k] = merged.get(k, 0) + v
        other_count = merged.pop(OTHER, 0)
        ranked = sorted(merged.items(), key=lambda kv: -kv[1])
        out.counts = dict(ranked[: out.max_categories])
        other_count += sum(v for _, v in ranked[out.max_categories :])
        if other_count:
            out.counts[OTHER] = other_count
            out.distinct_capped = out.distinct_capped or len(ranked) > out.max_categories
        return out

    @property
    def missing_rate(self) -> float | None:
        """Share of events without a value."""
        return self.missing / self.count if self.count else None

    def summary(self, top_k: int = 10) -> dict[str, Any]:
        """Readable figures with the ``top_k`` most frequent categories."""
        present = self.count - self.missing
        top = sorted(((k, v) for k, v in self.counts.items() if k != OTHER), key=lambda kv: -kv[1])
        return {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "missing_rate": self.missing_rate,
            "wrong_type": self.wrong_type,
            "distinct": len(self.counts) - (OTHER in self.counts),
            "distinct_capped": self.distinct_capped,
            "top": [{"value": k, "count": v, "share": v / present} for k, v in top[:top_k]],
            "other": self.counts.get(OTHER, 0),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "wrong_type": self.wrong_type,
            "max_categories": self.max_categories,
            "distinct_capped": self.distinct_capped,
            "counts": dict(self.counts),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CategoricalStats:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(state["max_categories"])
        out.count, out.missing, out.wrong_type = state["count"], state["missing"], state["wrong_type"]
        out.distinct_capped = state["distinct_capped"]
        out.counts = dict(state["counts"])
        return out


# Longer category values are cut: a text field sent as a feature must not
# carry whole documents into the state (it is written to Kafka with every record).
MAX_CATEGORY_CHARS = 120


def category(value: Any) -> str:
    """The category a non-missing value is counted under (booleans as ``true``/``false``, long texts cut)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= MAX_CATEGORY_CHARS else text[: MAX_CATEGORY_CHARS - 1] + "…"


FeatureStats = NumericStats | CategoricalStats


def feature_from_dict(state: dict[str, Any]) -> FeatureStats:
    """Rebuild a numeric or categorical feature from its ``to_dict`` output."""
    return NumericStats.from_dict(state) if state["kind"] == "numeric" else CategoricalStats.from_dict(state)


class FeatureSet:
    """Statistics of every feature of a model, at most ``max_features`` of them.

    Features beyond the cap are not tracked; their names are counted in
    ``untracked`` so the cap is visible rather than silent.

    >>> fs = FeatureSet(max_features=2)
    >>> fs.update([{"a": 1.0, "b": "x"}, {"a": None, "c": 3}])
    >>> sorted(fs.features), fs.untracked
    (['a', 'b'], 1)
    >>> fs.features["b"].missing   # absent from the second event
    1
    """

    __slots__ = ("features", "max_categories", "max_features", "untracked", "untracked_names")

    def __init__(self, max_features: int = 200, max_categories: int = 100) -> None:
        self.max_features = max_features
        self.max_categories = max_categories
        self.features: dict[str, FeatureStats] = {}
        self.untracked = 0
        self.untracked_names: list[str] = []

    def update(
        self,
        rows: list[dict[str, Any] | None],
        allowed: dict[str, None] | None = None,
        kinds: dict[str, str] | None = None,
        columns: BatchColumns | None = None,
    ) -> None:
        """Add the ``features`` dicts of a batch of events (None: no features).

        ``allowed``, when given, is the set of feature names to track; it
        lets every window of a model track the same capped set. ``kinds``
        (feature -> ``numeric`` or ``categorical``), when given, decides each
        feature's kind, and a kind decided here is added to it. ``columns``,
        the same rows' columns (:class:`BatchColumns`), saves reading their
        names and numeric values again.

        >>> kinds = {"a": "numeric"}
        >>> fs = FeatureSet()
        >>> fs.update([{"a": "broken", "b": 2.0}], kinds=kinds)
        >>> fs.features["a"].wrong_type, kinds
        (1, {'a': 'numeric', 'b': 'numeric'})
        """
        names = columns.feature_names() if columns is not None else feature_names_in(rows)
        if allowed is not None:
            names = {k: None for k in names if k in allowed}
        # The numeric features' columns, added together at the end.
        numeric_stats: list[NumericStats] = []
        numeric_columns: list[np.ndarray] = []
        for name in list(self.features) + [k for k in names if k not in self.features]:
            stats = self.features.get(name)
            if stats is None:
                if len(self.features) >= self.max_features:
                    if name not in self.untracked_names:
                        self.untracked += 1
                        if len(self.untracked_names) < 20:
                            self.untracked_names.append(name)
                    continue
                if not any(r and r.get(name) is not None for r in rows):
                    continue
                kind = kinds.get(name) if kinds is not None else None
                if kind is None:
                    present = [r[name] for r in rows if r and r.get(name) is not None]
                    # The majority of the first batch decides, so one stray value
                    # cannot turn a numeric feature into a categorical one.
                    numeric = sum(1 for v in present if is_numeric(v))
                    kind = "numeric" if 2 * numeric >= len(present) else "categorical"
                    if kinds is not None:
                        kinds[name] = kind
                stats = NumericStats() if kind == "numeric" else CategoricalStats(self.max_categories)
                self.features[name] = stats
            if isinstance(stats, NumericStats):
                known = columns.with_wrong_typed(name) if columns is not None else None
                numbers, wrong = known or numeric_column([row.get(name) if row else None for row in rows])
                numeric_stats.append(stats)
                numeric_columns.append(numbers)
                # A wrong-typed value is counted as wrong, not as missing.
                stats.missing -= wrong
                stats.wrong_type += wrong
            else:
                column = [row.get(name) if row else None for row in rows]
                wrong = sum(1 for v in column if is_numeric(v))
                if wrong:
                    column = [None if is_numeric(v) else v for v in column]
                stats.update_many(column)
                stats.missing -= wrong
                stats.wrong_type += wrong
        if numeric_stats:
            add_rows_to_numeric_stats(numeric_stats, np.stack(numeric_columns))

    def merge(self, other: FeatureSet) -> FeatureSet:
        """Both sets' statistics in one."""
        out = FeatureSet(self.max_features, self.max_categories)
        out.untracked = max(self.untracked, other.untracked)
        out.untracked_names = list(dict.fromkeys(self.untracked_names + other.untracked_names))[:20]
        for name in dict.fromkeys(list(self.features) + list(other.features)):
            a, b = self.features.get(name), other.features.get(name)
            if a is not None and b is not None and a.kind == b.kind:
                out.features[name] = a.merge(b)  # type: ignore[arg-type]
            else:
                out.features[name] = a if a is not None else b  # type: ignore[assignment]
        return out

    def kinds(self) -> dict[str, str]:
        """Each tracked feature's kind."""
        return {name: stats.kind for name, stats in self.features.items()}

    def summary(self) -> dict[str, Any]:
        """Readable figures per feature."""
        return {name: stats.summary() for name, stats in self.features.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "max_features": self.max_features,
            "max_categories": self.max_categories,
            "untracked": self.untracked,
            "untracked_names": list(self.untracked_names),
            "features": {name: stats.to_dict() for name, stats in self.features.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureSet:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(state["max_features"], state["max_categories"])
        out.untracked = state["untracked"]
        out.untracked_names = list(state["untracked_names"])
        out.features = {name: feature_from_dict(s) for name, s in state["features"].items()}
        return out
