"""What a server-written WebSocket frame costs the relay: websockets' own framing (a
``Frame`` object built and serialized per frame, through ``Protocol.send_text`` and
``data_to_send``, the baseline) against :func:`sealpost.server.connections.text_frames`,
which the relay uses for pushes, ``empty`` and ``sent`` answers. Both make the same bytes
(checked here first); each figure is the best of ``--repeat`` timings in one run.

Three writes, as the relay makes them: a push of one 200-byte envelope followed by
``empty`` (the thinly spread load: one message per device per group commit), a ``sent``
answer, and a burst of 16 pushes and ``empty`` (the concentrated load).

    .venv/bin/python bench/frame_cost.py [--json bench/results/frame_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import timeit
from pathlib import Path

from websockets.protocol import State
from websockets.server import ServerProtocol

from sealpost.server.connections import text_frames
from sealpost.server.stream import message_text, sent_text


def websockets_frames(protocol: ServerProtocol, texts: list[str]) -> bytes:
    for text in texts:
        protocol.send_text(text.encode())
    return b"".join(protocol.data_to_send())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("bench/results/frame_cost.json"))
    args = parser.parse_args()
    protocol = ServerProtocol()
    protocol.state = State.OPEN
    push = message_text(os.urandom(16), os.urandom(200), 1_700_000_000)
    writes = {
        "push + empty": [push, '{"type":"empty"}'],
        "sent answer": [sent_text(12345, 1)],
        "16 pushes + empty": [push] * 16 + ['{"type":"empty"}'],
    }
    rows = []
    print(f"{'write':<20}{'websockets us':>15}{'text_frames us':>16}{'ratio':>8}")
    for name, texts in writes.items():
        assert websockets_frames(protocol, texts) == text_frames(texts), name
        timings = []
        for fn in (lambda t=texts: websockets_frames(protocol, t), lambda t=texts: text_frames(t)):
            best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat))
            timings.append(best / args.number * 1e6)
        base, ours = timings
        rows.append({"write": name, "websockets_us": base, "text_frames_us": ours})
        print(f"{name:<20}{base:>15.2f}{ours:>16.2f}{ours / base:>7.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"benchmark": "bench/frame_cost.py", "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
