"""The real sealpost server, with an operator in front of it who misbehaves on request.

Run as ``python hostile_server.py DATA PORT [DATABASE]``. It serves exactly what
``sealpost server --database DATABASE`` serves (the same application, storage, keys and
settings, with rate limits off; SQLite in DATA without a PostgreSQL URL), except:

- a request path may start with ``/_view/NAME``: the prefix is removed before the server
  sees the request, and rules may apply to one view only. A test gives each user a
  server URL with its own view, so the operator can show two users two different things
  (a split view) while both talk to one server;
- before each HTTP request, ``DATA/hostile.json`` is read: a list of rules
  ``{"method", "path" (a regular expression matched in full), "view" (optional),
  "status", "body" (JSON)}``. The first rule that matches answers instead of the server;
  a rule with ``"hang_up": true`` instead starts an answer and closes the connection in
  the middle of it (what the client sees as a connection error).

The operator's other powers (editing the database, signing with the server's and the log's
keys, injecting envelopes) need nothing here: the test has the data directory and the
database.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from sealpost.server.config import ServerConfig
from sealpost.server.run import run_server

_VIEW = re.compile(r"^/_view/([a-z0-9]+)(/.*)$")


class Hostile:
    def __init__(self, app: Any, rules: Path) -> None:
        self.app = app
        self.rules = rules

    def _rules(self) -> list[dict[str, Any]]:
        try:
            doc = json.loads(self.rules.read_text())
        except FileNotFoundError:
            return []
        return list(doc)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        view = None
        match = _VIEW.match(scope["path"])
        if match:
            view, path = match.group(1), match.group(2)
            scope = dict(scope, path=path, raw_path=path.encode())
        if scope["type"] == "http":
            for rule in self._rules():
                if rule.get("view") not in (None, view):
                    continue
                if rule["method"] != scope["method"]:
                    continue
                if not re.fullmatch(rule["path"], scope["path"]):
                    continue
                if rule.get("hang_up"):
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [(b"content-length", b"1000")],
                        }
                    )
                    await send({"type": "http.response.body", "body": b"{", "more_body": True})
                    return  # the server closes the connection: the body never completes
                body = json.dumps(rule["body"]).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": int(rule.get("status", 200)),
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def main() -> None:
    data, port = Path(sys.argv[1]), int(sys.argv[2])
    database = sys.argv[3] if len(sys.argv) > 3 else ""
    config = ServerConfig(
        data=data,
        database=database,
        host="127.0.0.1",
        port=port,
        rate_per_address=0,
        rate_sealed_per_address=0,
        log_level="warning",
    )
    run_server(config, wrap=lambda app: Hostile(app, data / "hostile.json"))


if __name__ == "__main__":
    main()
