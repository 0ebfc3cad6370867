"""Prometheus metrics, written in the text exposition format by hand.

Only counts and latencies, labelled by route *template* (``/v1/accounts/{username}``,
never the path a client sent) and status: nothing identifying an account, device, address
or message. Histograms use fixed buckets suited to a relay (sub-millisecond to seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Metrics"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], _Histogram]] = {}
        self._help: dict[str, str] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._read: dict[str, Callable[[], int]] = {}

    def inc(self, name: str, help_text: str, amount: int = 1, /, **labels: str) -> None:
        self._help.setdefault(name, help_text)
        series = self._counters.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0) + amount

    def observe(self, name: str, help_text: str, value: float, /, **labels: str) -> None:
        self._help.setdefault(name, help_text)
        series = self._histograms.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        hist = series.get(key)
        if hist is None:
            hist = series[key] = _Histogram()
        hist.observe(value)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._gauges[name] = (help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], int]) -> None:
        """A counter without labels that its owner keeps (an ``int`` it adds to on a hot
        path, where :meth:`inc` would cost a call and three lookups each time), read when
        rendered; shown as :meth:`inc`'s counters are."""
        self._help.setdefault(name, help_text)
        self._read[name] = read

    def render(self) -> str:
        lines: list[str] = []
        counters = dict(self._counters)
        for name, kept in self._read.items():
            counters[name] = {**counters.get(name, {}), (): kept()}
        for name, series in sorted(counters.items()):
            lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
            for key, value in sorted(series.items()):
                lines.append(f"{name}{{{_labels(key)}}} {value:g}")
        for name, hseries in sorted(self._histograms.items()):
            lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} histogram"]
            for key, hist in sorted(hseries.items()):
                for bound, count in zip(BUCKETS, hist.counts, strict=True):
                    labels = _labels((*key, ("le", f"{bound:g}")))
                    lines.append(f"{name}_bucket{{{labels}}} {count}")
                lines.append(f"{name}_bucket{{{_labels((*key, ('le', '+Inf')))}}} {hist.total}")
                lines.append(f"{name}_sum{{{_labels(key)}}} {hist.sum:.6f}")
                lines.append(f"{name}_count{{{_labels(key)}}} {hist.total}")
        for name, (help_text, read) in sorted(self._gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"
