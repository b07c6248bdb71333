"""A model version's callers per window in bounded memory: heavy hitters and distinct clients.

Two Apache DataSketches per tumbling window, whatever the number of client ids:

- a frequent-items sketch of requests per client (Anderson et al.'s
  Misra-Gries variant): :meth:`ClientPopulation.requests_at_least` is a lower
  bound on a client's requests this window, short of the truth by at most
  ``epsilon x requests`` (``epsilon`` = 3.5 / 2^``lg_max_items``), so a burst
  judged on it is never an artefact of the sketch; the last closed window's
  sketch is kept too, to tell a newcomer from a client that was already heavy
  (there its estimate errs high, so a regular is not taken for a newcomer);
- a HyperLogLog sketch of distinct clients (Flajolet et al.), relative
  standard error 1.04 / sqrt(2^``lg_distinct``).

When a window closes, its requests per client and distinct clients feed two
running baselines (a mean over the last ten windows at most, as the
per-client baselines of :class:`stream.detectors.client_abuse.ClientAbuseRule`):
the model's usual per-client rate, and its usual number of callers.

State is plain data: the sketches in DataSketches' own serialisation
(documented, language-neutral bytes, base64 in JSON), never pickle.

References: D. Anderson, P. Bevan, K. Lang, E. Liberty, L. Rhodes and
J. Thaler, "A high-performance algorithm for identifying frequent items in
data streams", IMC 2017. P. Flajolet, E. Fusy, O. Gandouet and F. Meunier,
"HyperLogLog: the analysis of a near-optimal cardinality estimation
algorithm", AofA 2007.
"""

from __future__ import annotations

import base64
from typing import Any

import datasketches

from stream.stats.window_stats import window_start

# The baselines average this many windows at most, so they follow slow change (a daily cycle).
BASELINE_WINDOWS = 10


class ClientPopulation:
    """Requests per client and distinct clients in the current window, and their usual levels.

    >>> pop = ClientPopulation(window_s=60)
    >>> for w in range(3):
    ...     for i in range(300):
    ...         pop.add(f"user-{i % 100}", w * 60.0 + i * 0.1)
    >>> pop.add("user-0", 180.0)     # the first request of window 4 closes window 3
    >>> pop.windows, round(pop.usual_requests_per_client, 2), round(pop.usual_distinct)
    (3, 3.0, 100)
    >>> for i in range(500):
    ...     pop.add("newcomer", 181.0 + i * 0.01)
    >>> pop.requests_at_least("newcomer"), pop.requests_at_least("nobody")
    (500, 0)
    >>> pop.previous_requests_estimate("newcomer"), pop.previous_requests_estimate("user-0") > 0
    (0, True)
    """

    __slots__ = (
        "distinct",
        "heavy",
        "lg_distinct",
        "lg_max_items",
        "previous",
        "requests",
        "usual_distinct",
        "usual_requests_per_client",
        "window_s",
        "window_start",
        "windows",
    )

    def __init__(self, window_s: float = 60.0, lg_max_items: int = 10, lg_distinct: int = 12) -> None:
        self.window_s = window_s
        self.lg_max_items = lg_max_items
        self.lg_distinct = lg_distinct
        self.window_start: float | None = None
        self.requests = 0
        self.heavy = datasketches.frequent_strings_sketch(lg_max_items)
        self.previous = datasketches.frequent_strings_sketch(lg_max_items)
        self.distinct = datasketches.hll_sketch(lg_distinct)
        # Closed windows that fed the baselines.
        self.windows = 0
        self.usual_requests_per_client = 0.0
        self.usual_distinct = 0.0

    @property
    def epsilon(self) -> float:
        """The frequent-items sketch's error, as a share of the window's requests."""
        return datasketches.frequent_strings_sketch.get_epsilon_for_lg_size(self.lg_max_items)

    def add(self, client_id: str, ts: float) -> None:
        """Count one request of ``client_id`` at event time ``ts`` (late requests count in the current window)."""
        start = window_start(ts, self.window_s)
        if self.window_start is None:
            self.window_start = start
        elif start > self.window_start:
            self._roll(start)
        self.requests += 1
        self.heavy.update(client_id)
        self.distinct.update(client_id)

    def _roll(self, start: float) -> None:
        assert self.window_start is not None
        # Windows without a request count as none, up to the baseline's length.
        skipped = min(BASELINE_WINDOWS, max(0, round((start - self.window_start) / self.window_s) - 1))
        distinct = self.distinct.get_estimate()
        closed = [(self.requests / distinct if distinct else 0.0, distinct)] + [(0.0, 0.0)] * skipped
        for per_client, callers in closed:
            self.windows += 1
            weight = 1.0 / min(self.windows, BASELINE_WINDOWS)
            self.usual_requests_per_client += weight * (per_client - self.usual_requests_per_client)
            self.usual_distinct += weight * (callers - self.usual_distinct)
        self.window_start, self.requests = start, 0
        self.previous = datasketches.frequent_strings_sketch(self.lg_max_items) if skipped else self.heavy
        self.heavy = datasketches.frequent_strings_sketch(self.lg_max_items)
        self.distinct = datasketches.hll_sketch(self.lg_distinct)

    def requests_at_least(self, client_id: str) -> int:
        """A lower bound on ``client_id``'s requests this window (0 for a client the sketch does not hold)."""
        return int(self.heavy.get_lower_bound(client_id))

    def previous_requests_estimate(self, client_id: str) -> int:
        """``client_id``'s requests in the window before this one, erring high (0 if the sketch did not hold it).

        Erring high is what telling a regular from a newcomer needs: a regular
        is never mistaken for a newcomer because the sketch undercounted it.
        """
        return int(self.previous.get_estimate(client_id))

    def distinct_clients(self) -> float:
        """Estimated distinct clients this window."""
        return float(self.distinct.get_estimate())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "window_start": self.window_start,
            "requests": self.requests,
            "heavy": _encoded(self.heavy.serialize()),
            "previous": _encoded(self.previous.serialize()),
            "distinct": _encoded(self.distinct.serialize_compact()),
            "windows": self.windows,
            "usual_requests_per_client": self.usual_requests_per_client,
            "usual_distinct": self.usual_distinct,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved (sketch bytes are parsed by DataSketches, never executed)."""
        self.window_start, self.requests = state["window_start"], int(state["requests"])
        self.heavy = datasketches.frequent_strings_sketch.deserialize(_decoded(state["heavy"]))
        self.previous = datasketches.frequent_strings_sketch.deserialize(_decoded(state["previous"]))
        self.distinct = datasketches.hll_sketch.deserialize(_decoded(state["distinct"]))
        self.windows = int(state["windows"])
        self.usual_requests_per_client = float(state["usual_requests_per_client"])
        self.usual_distinct = float(state["usual_distinct"])


def _encoded(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decoded(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
