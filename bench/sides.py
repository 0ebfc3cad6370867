"""Two source trees measured in alternating processes (for the in-process benchmarks'
``--baseline SRC``): each process imports ``sealpost`` from its tree's ``src`` (first on
``PYTHONPATH``), runs the script's ``--child`` measurement and prints it as JSON; the
medians per tree and every run are kept, and written as JSON on request."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Sides:
    sources: dict[str, Path]
    runs: dict[str, list[dict[str, float]]]
    medians: dict[str, dict[str, float]]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {
            "sources": {k: str(v) for k, v in self.sources.items()},
            "medians": self.medians,
            "runs": self.runs,
        }
        path.write_text(json.dumps(document, indent=2))


def relay_ws_config(app: Any) -> Any:
    """uvicorn's ``Config``, loaded, with the relay's WebSocket protocol as ``sealpost
    server`` runs it (``corked(websocket_protocol())``, from the tree on ``PYTHONPATH``),
    no pings, lifespan or logs: for the benchmarks that drive that protocol's instances
    themselves, in memory or on loopback."""
    from uvicorn.config import Config

    from sealpost.server.connections import corked
    from sealpost.server.ws_protocol import websocket_protocol

    config = Config(
        app,
        ws=corked(websocket_protocol()),
        lifespan="off",
        ws_ping_interval=None,
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    config.load()
    return config


def _child(script: Path, src: Path, rounds: int, warmup: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, str(script), "--child", "--rounds", str(rounds), "--warmup", str(warmup)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def measure(
    script: str,
    baseline: Path | None,
    *,
    runs: int,
    rounds: int,
    warmup: int,
    keys: tuple[str, ...],
) -> Sides:
    """``runs`` processes of ``script`` per tree (the baseline's first, then this tree's,
    alternating), and the median of each of ``keys`` per tree."""
    here = Path(__file__).resolve().parent.parent / "src"
    sources = {"this tree": here}
    if baseline is not None:
        sources = {"baseline": baseline.resolve(), **sources}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    for _ in range(runs):
        for name, src in sources.items():
            results[name].append(_child(Path(script), src, rounds, warmup))
    medians = {
        name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in results.items()
    }
    return Sides(sources, results, medians)
