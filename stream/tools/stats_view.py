"""Rendering a model's statistics (from the worker's JSON) as terminal tables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.2%}"


def _when(ts: Any) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def render_models(models: list[dict[str, Any]]) -> Table:
    """The models list as one table."""
    table = Table(title="models")
    for column in ("model", "version", "events", "last event (UTC)", "events in window", "last record"):
        table.add_column(column, justify="right" if column.startswith("events") else "left", overflow="fold")
    for entry in models:
        for version, v in sorted(entry["versions"].items()):
            table.add_row(
                entry["model"],
                version,
                _num(v["events"]),
                _when(v["last_event_time"]),
                _num(v["window_events"]),
                _traffic(entry.get("traffic")),
            )
    return table


def _traffic(traffic: dict[str, Any] | None) -> str:
    """How long ago the model's last record arrived, and SILENT past its threshold.

    >>> _traffic({"quiet_s": 4.2, "silent": False}), _traffic({"quiet_s": 900.0, "silent": True}), _traffic(None)
    ('4 s ago', '900 s ago SILENT', '-')
    """
    if not traffic or traffic.get("quiet_s") is None:
        return "-"
    return f"{traffic['quiet_s']:.0f} s ago" + (" SILENT" if traffic.get("silent") else "")


def _accuracy(version: dict[str, Any]) -> str:
    """Estimated accuracy (from confidence, with its band) beside the one labels show.

    >>> _accuracy({"estimated_performance": {"estimated": {"accuracy": 0.91, "accuracy_band": 0.012}},
    ...            "performance": {"metrics": {"accuracy": 0.9}}})
    '91.00% ± 1.20% / 90.00%'
    >>> _accuracy({"performance": {"metrics": {}}})
    '- / -'
    """
    estimated = (version.get("estimated_performance") or {}).get("estimated") or {}
    realised = ((version.get("performance") or {}).get("metrics") or {}).get("accuracy")
    left = f"{_pct(estimated['accuracy'])} ± {_pct(estimated['accuracy_band'])}" if "accuracy" in estimated else "-"
    return f"{left} / {_pct(realised)}"


def render_stats(stats: dict[str, Any]) -> Group:
    """One model's statistics: a health table and a feature table per version."""
    parts: list[Any] = []
    for version, v in sorted(stats["versions"].items()):
        w = v["window"]
        lat = w["latency_ms"]
        health = Table(
            title=f"{stats['model']} {version}: {w['type']} window {_when(w['start'])} - {_when(w['end'])}",
            show_header=False,
        )
        health.add_column("what", overflow="fold")
        health.add_column("value", justify="right")
        rows = [
            ("last record", _traffic(stats.get("traffic"))),
            ("events in window", _num(w["count"])),
            ("throughput per s", _num(w["throughput_per_s"])),
            ("error rate", _pct(w["error_rate"])),
            ("errors by kind", ", ".join(f"{k} {n}" for k, n in w["errors_by_kind"].items()) or "-"),
            (
                "latency ms mean / std",
                f"{_num(lat.get('mean'))} / {_num(lat.get('std'))}",
            ),
            ("latency ms p50 / p95 / p99", f"{_num(lat['p50'])} / {_num(lat['p95'])} / {_num(lat['p99'])}"),
            ("latency ms min / max", f"{_num(lat.get('min'))} / {_num(lat.get('max'))}"),
            ("confidence p50", _num((w["confidence"] or {}).get("p50"), 3)),
            (
                "predicted classes",
                ", ".join(f"{c['value']} {c['share']:.1%}" for c in w["prediction"]["classes"][:5]) or "-",
            ),
            (
                "tokens in / out mean",
                f"{_num((w['tokens_in'] or {}).get('mean'))} / {_num((w['tokens_out'] or {}).get('mean'))}",
            ),
            ("accuracy estimated / realised", _accuracy(v)),
            ("events total", _num(v["events"])),
            ("late / too late", f"{_num(v['late_events'])} / {_num(v['too_late_events'])}"),
            (
                "reference",
                f"{v['reference']['source']}, {_num(v['reference']['events'])} events"
                if v["reference"]
                else f"learning: {v['reference_progress']['events']} of {v['reference_progress']['needed']}",
            ),
        ]
        for row in rows:
            health.add_row(*row)
        parts.append(health)
        if w["features"]:
            features = Table(title=f"{stats['model']} {version}: features")
            for column in (
                "feature",
                "kind",
                "count",
                "missing",
                "mean",
                "std",
                "p50",
                "p95",
                "top / distinct",
            ):
                features.add_column(
                    column,
                    justify="left" if column in ("feature", "kind", "top / distinct") else "right",
                    overflow="fold",
                )
            for name, f in sorted(w["features"].items()):
                if f["kind"] == "numeric":
                    q = f["quantiles"]
                    features.add_row(
                        name,
                        "numeric",
                        _num(f["count"]),
                        _pct(f["missing_rate"]),
                        _num(f.get("mean")),
                        _num(f.get("std")),
                        _num(q.get("p50")),
                        _num(q.get("p95")),
                        "",
                    )
                else:
                    top = ", ".join(f"{t['value']} {t['share']:.0%}" for t in f["top"][:3])
                    distinct = f"{f['distinct']}{'+' if f['distinct_capped'] else ''}"
                    features.add_row(
                        name,
                        "categorical",
                        _num(f["count"]),
                        _pct(f["missing_rate"]),
                        "",
                        "",
                        "",
                        "",
                        f"{top} ({distinct} distinct)",
                    )
            parts.append(features)
    return Group(*parts)


def render_segments(data: dict[str, Any]) -> Group:
    """One table per version: each segment's current window, usual latency, accuracy and firing alerts.

    >>> seg = {"events": 900, "usual": {"latency_ms": 20.0}, "firing": ["latency_ms"],
    ...        "window": {"count": 300, "error_rate": 0.0, "latency_ms": {"p50": 21.0, "p99": 850.0}},
    ...        "accuracy": {"estimated": 0.9, "realised": None, "labelled": 0}}
    >>> data = {"model": "m", "max_segments": 20, "min_slice_events": 20,
    ...         "versions": {"1": {"eu": seg, "tiny": {"suppressed": True, "reason": "fewer than 20 events"}}}}
    >>> import io
    >>> console = Console(width=160, record=True, file=io.StringIO())
    >>> console.print(render_segments(data))
    >>> rows = [[c.strip() for c in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
    >>> [r for r in rows if r and r[0] in ("eu", "tiny")]  # doctest: +NORMALIZE_WHITESPACE
    [['eu', '300', '0.00%', '21.00 / 850.00', '20.00', '90.00% / -', 'latency_ms'],
     ['tiny', 'fewer than 20 events', '', '', '', '', '']]
    """
    parts: list[Any] = []
    for version, segments in sorted(data["versions"].items()):
        table = Table(
            title=f"{data['model']} {version}: segments (at most {data['max_segments']} watched; slices under "
            f"{data['min_slice_events']} events suppressed)"
        )
        for column in ("segment", "events in window", "error rate", "latency p50 / p99 ms", "usual latency ms"):
            table.add_column(column, justify="left" if column == "segment" else "right")
        table.add_column("accuracy estimated / realised", justify="right")
        table.add_column("firing", overflow="fold")
        for name, s in sorted(segments.items()):
            if s.get("suppressed"):
                table.add_row(name, s["reason"], "", "", "", "", "")
                continue
            w, lat, acc = s["window"], s["window"]["latency_ms"] or {}, s["accuracy"]
            table.add_row(
                name,
                _num(w["count"]),
                _pct(w["error_rate"]),
                f"{_num(lat.get('p50'))} / {_num(lat.get('p99'))}",
                _num(s["usual"].get("latency_ms")),
                f"{_pct(acc['estimated'])} / {_pct(acc['realised'])}",
                ", ".join(s["firing"]) or "-",
            )
        parts.append(table)
    return Group(*parts)


def print_segments(data: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`render_segments`."""
    (console or Console()).print(render_segments(data))


def print_stats(stats: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`render_stats` output."""
    (console or Console()).print(render_stats(stats))
