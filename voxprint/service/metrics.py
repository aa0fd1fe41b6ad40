"""Prometheus-style metrics of one service worker: request counts, latencies, store size.

Rendered in the Prometheus text exposition format (version 0.0.4) without a client library. The
counters are per worker process (label ``worker``, its pid): with ``--workers N`` a scrape reaches one
worker, so sum over ``worker`` in queries. Routes are labelled by their template
(``/v1/speakers/{speaker_id}``), never the raw path, so the number of series stays bounded.

Example:
    >>> metrics = Metrics(worker="7")
    >>> metrics.observe("GET", "/healthz", 200, 0.003)
    >>> text = metrics.render({"voxprint_store_speakers": ("speakers enrolled", 2)})
    >>> 'voxprint_requests_total{worker="7",method="GET",route="/healthz",status="200"} 1' in text
    True
    >>> 'voxprint_request_seconds_bucket{worker="7",method="GET",route="/healthz",le="0.005"} 1' in text
    True
    >>> "voxprint_store_speakers{worker=\\"7\\"} 2" in text
    True
"""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Mapping

__all__ = ["LATENCY_BUCKETS", "Metrics"]

#: Upper bounds (seconds) of the latency histogram: an embedding takes about 0.1 s on one core, an
#: enrollment a few tenths; the top buckets catch queueing under load.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in labels.items()) + "}"


class Metrics:
    """Request counters and latency histograms of one worker.

    Args:
        worker: the worker's label (its process id by default in the service).
    """

    def __init__(self, worker: str):
        self.worker = worker
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        with self._lock:
            self._counts[(method, route, str(status))] += 1
            buckets = self._buckets.setdefault((method, route), [0] * len(LATENCY_BUCKETS))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._sums[(method, route)] += seconds

    def render(self, gauges: Mapping[str, tuple[str, float]]) -> str:
        """The exposition text: the counters, the histograms and ``gauges`` (name -> (help, value)).

        Returns:
            Text for a ``text/plain; version=0.0.4`` response.
        """
        worker = self.worker
        lines = ["# HELP voxprint_requests_total HTTP requests answered, by route template and status.",
                 "# TYPE voxprint_requests_total counter"]
        with self._lock:
            for (method, route, status), count in sorted(self._counts.items()):
                labels = _labels(worker=worker, method=method, route=route, status=status)
                lines.append(f"voxprint_requests_total{labels} {count}")
            lines += ["# HELP voxprint_request_seconds Time from the request's arrival to its response.",
                      "# TYPE voxprint_request_seconds histogram"]
            for (method, route), buckets in sorted(self._buckets.items()):
                total = sum(c for (m, r, _), c in self._counts.items() if (m, r) == (method, route))
                for bound, count in zip(LATENCY_BUCKETS, buckets):
                    labels = _labels(worker=worker, method=method, route=route, le=f"{bound:g}")
                    lines.append(f"voxprint_request_seconds_bucket{labels} {count}")
                labels = _labels(worker=worker, method=method, route=route, le="+Inf")
                lines.append(f"voxprint_request_seconds_bucket{labels} {total}")
                labels = _labels(worker=worker, method=method, route=route)
                lines.append(f"voxprint_request_seconds_sum{labels} {self._sums[(method, route)]:.6f}")
                lines.append(f"voxprint_request_seconds_count{labels} {total}")
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                      f"{name}{_labels(worker=worker)} {value:g}"]
        return "\n".join(lines) + "\n"
