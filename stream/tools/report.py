"""``stream-monitor report``: alerts over time as a PNG timeline, for postmortems.

One row per alert series (model, version, signal, detector); a bar from
firing to resolved (or to the end of the report while still firing),
coloured by severity, with a tick at every published repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SEVERITY_COLOURS = {"info": "#1565c0", "warning": "#ef6c00", "critical": "#c62828"}


@dataclass
class AlertSpan:
    """One stretch of an alert series, from its first firing alert to its resolution."""

    series: str
    kind: str
    severity: str
    start: float
    end: float | None  # None: still firing
    publications: list[float] = field(default_factory=list)


def alert_spans(alerts: list[dict[str, Any]]) -> list[AlertSpan]:
    """Pair firing and resolved alerts by fingerprint, in event-time order.

    >>> a = lambda status, t, sev="warning": {"fingerprint": "f", "status": status, "event_time": t,
    ...     "model": "m", "model_version": "1", "signal": "latency_ms", "detector": "zscore",
    ...     "kind": "anomaly", "severity": sev}
    >>> spans = alert_spans([a("firing", 10), a("firing", 400, "critical"), a("resolved", 600), a("firing", 900)])
    >>> [(s.start, s.end, s.severity, s.publications) for s in spans]
    [(10, 600, 'critical', [10, 400]), (900, None, 'warning', [900])]
    """
    spans: list[AlertSpan] = []
    open_spans: dict[str, AlertSpan] = {}
    for alert in sorted(alerts, key=lambda a: a["event_time"]):
        fp = alert["fingerprint"]
        span = open_spans.get(fp)
        if alert["status"] == "resolved":
            if span is not None:
                span.end = alert["event_time"]
                del open_spans[fp]
            continue
        if span is None:
            series = f"{alert['model']} {alert['model_version']} · {alert['signal']} ({alert['detector']})"
            span = AlertSpan(series, alert["kind"], alert["severity"], alert["event_time"], None)
            open_spans[fp] = span
            spans.append(span)
        elif _rank(alert["severity"]) > _rank(span.severity):
            span.severity = alert["severity"]
        span.publications.append(alert["event_time"])
    return spans


def _rank(severity: str) -> int:
    return list(SEVERITY_COLOURS).index(severity) if severity in SEVERITY_COLOURS else -1


def plot_timeline(alerts: list[dict[str, Any]], output: Path, title: str = "stream-monitor alerts") -> list[AlertSpan]:
    """Draw the timeline of ``alerts`` into ``output`` (PNG); returns the spans drawn."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    spans = alert_spans(alerts)
    rows = sorted({s.series for s in spans})
    fig, ax = plt.subplots(figsize=(12, max(2.5, 0.45 * len(rows) + 1.5)))
    if not spans:
        ax.text(0.5, 0.5, "no alerts in this period", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        last = max(max(s.publications + ([s.end] if s.end else [])) for s in spans)
        first = min(s.start for s in spans)
        pad = max((last - first) * 0.02, 30.0)
        for span in spans:
            y = rows.index(span.series)
            end = span.end if span.end is not None else last + pad
            start_d, end_d = _date(span.start), _date(end)
            colour = SEVERITY_COLOURS.get(span.severity, "#555")
            ax.barh(y, end_d - start_d, left=start_d, height=0.5, color=colour, alpha=0.85 if span.end else 0.45)
            ax.plot([_date(t) for t in span.publications], [y] * len(span.publications), "|", color="black", ms=12)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
        ax.set_xlabel("event time (UTC)")
        ax.grid(axis="x", alpha=0.3)
        legend = [Patch(color=c, label=s) for s, c in SEVERITY_COLOURS.items()]
        legend.append(Patch(color="#999", alpha=0.45, label="still firing"))
        ax.legend(handles=legend, loc="upper right", fontsize=8, ncols=4)
    ax.set_title(f"{title} ({len(spans)} alert periods, {len(alerts)} alert messages)")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return spans


def _date(ts: float) -> float:
    import matplotlib.dates as mdates

    return mdates.date2num(datetime.fromtimestamp(ts, UTC))
