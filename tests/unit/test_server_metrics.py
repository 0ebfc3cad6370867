"""The relay's Prometheus counters: a counter its owner keeps in an int (the push count,
added to once a message) renders as the counters :meth:`Metrics.inc` keeps do."""

from __future__ import annotations

from sealpost.server.metrics import Metrics


def test_a_kept_counter_is_read_when_rendered_as_an_inc_counter_is() -> None:
    metrics = Metrics()
    kept = [0]
    metrics.counter("sealpost_kept_total", "kept by its owner", lambda: kept[0])
    metrics.inc("sealpost_added_total", "added by inc", 3)
    assert "sealpost_kept_total{} 0\n" in metrics.render()
    kept[0] = 7
    text = metrics.render()
    assert "# HELP sealpost_kept_total kept by its owner\n# TYPE sealpost_kept_total counter\n" in (
        text
    )
    assert "sealpost_kept_total{} 7\n" in text
    assert "sealpost_added_total{} 3\n" in text
    assert text.index("sealpost_added_total") < text.index("sealpost_kept_total")  # by name
