"""A minimal thread-safe Prometheus registry: labelled counters and histograms in the text exposition format.

registry = Registry()
requests = registry.counter("genrec_requests_total", "HTTP requests", ("endpoint", "method", "status"))
requests.inc(endpoint="/v1/recommend", method="POST", status="200")
latency = registry.histogram("genrec_request_latency_seconds", "latency", ("endpoint",))
latency.observe(0.004, endpoint="/v1/recommend")
registry.render()  -> text/plain; version=0.0.4
Written here rather than pulling in prometheus_client: the server needs two metric kinds and one lock.
"""

from __future__ import annotations

import bisect
import math
import threading

# Seconds; dense around the 1-25 ms serving budget.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


# Label values come from bounded sets, so a client inventing methods or paths cannot grow /metrics: anything
# outside the set is "other" (route templates, not raw paths, name endpoints).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"


def bounded(value: str, allowed: frozenset[str] | set[str]) -> str:
    """`value` if it is one of `allowed`, else "other"."""
    return value if value in allowed else OTHER


def status_class(status: int) -> str:
    """An HTTP status as a label: the code itself for 100-599, else "other"."""
    return str(status) if 100 <= status <= 599 else OTHER


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: tuple[str, ...], lock: threading.Lock) -> None:
        self.name, self.help, self.labels, self._lock = name, help, labels, lock

    def _key(self, kw: dict[str, str]) -> tuple[str, ...]:
        if set(kw) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(kw)}")
        return tuple(str(kw[n]) for n in self.labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        out = self.header()
        for key, v in sorted(self._values.items()):
            out.append(f"{self.name}{_labels(self.labels, key)} {_num(v)}")
        return out


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, *args, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        super().__init__(*args)
        self.buckets = tuple(sorted(buckets))
        # per label set: [per-bucket counts (non-cumulative, last = +Inf), sum]
        self._values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        i = bisect.bisect_left(self.buckets, value)  # le semantics: value <= bound lands in that bucket
        with self._lock:
            counts, total = self._values.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[i] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            v = self._values.get(self._key(labels))
            return sum(v[0]) if v else 0

    def lines(self) -> list[str]:
        out = self.header()
        for key, (counts, total) in sorted(self._values.items()):
            cum = 0
            for bound, c in zip((*self.buckets, math.inf), counts, strict=True):
                cum += c
                le = 'le="' + _num(bound) + '"'
                out.append(f"{self.name}_bucket{_labels(self.labels, key, le)} {cum}")
            out.append(f"{self.name}_sum{_labels(self.labels, key)} {_num(total[0])}")
            out.append(f"{self.name}_count{_labels(self.labels, key)} {cum}")
        return out


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[_Metric] = []

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        m = Counter(name, help, labels, self._lock)
        self._metrics.append(m)
        return m

    def histogram(
        self, name: str, help: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> Histogram:
        m = Histogram(name, help, labels, self._lock, buckets=buckets)
        self._metrics.append(m)
        return m

    def render(self) -> str:
        with self._lock:
            lines = [line for m in self._metrics for line in m.lines()]
        return "\n".join(lines) + "\n"


class ServingMetrics:
    """The server's metric set."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.counter("genrec_requests_total", "HTTP requests by endpoint and status", ("endpoint", "method", "status"))  # fmt: skip
        self.latency = r.histogram("genrec_request_latency_seconds", "End-to-end request latency inside the server", ("endpoint",))  # fmt: skip
        self.stage_latency = r.histogram("genrec_stage_latency_seconds", "Latency of each recommendation stage", ("stage",))  # fmt: skip
        self.events_ingested = r.counter("genrec_events_ingested_total", "Events stored (new event_ids)")
        self.events_duplicate = r.counter("genrec_events_duplicate_total", "Events skipped as already stored (same event_id and payload)")  # fmt: skip
        self.events_conflict = r.counter("genrec_events_conflict_total", "Events rejected with 409: an event_id reused with another payload")  # fmt: skip
        self.recommendations = r.counter("genrec_recommendations_total", "Recommendation responses by path", ("path",))  # fmt: skip
        self.batch_size = r.histogram("genrec_batch_requests", "Recommendation requests ranked together in one pipeline run", buckets=(1, 2, 4, 8, 16, 32, 64, 128))  # fmt: skip
        self.reloads = r.counter("genrec_model_reloads_total", "Admin model reloads by outcome", ("outcome",))

    def render(self) -> str:
        return self.registry.render()
