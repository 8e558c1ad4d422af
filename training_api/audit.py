"""Who changed which model and when: an append-only JSON-lines file, plus the actor.

Each line is one complete JSON object written with a single `write` on a file opened for
appending, so concurrent writers (API replicas on a shared volume, threads) never interleave
within a line. Version tags in the registry carry the latest promotion next to the model.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from core.auth import current_actor as authenticated_subject
from core.contracts import utcnow
from core.errors import InvalidInput

ANONYMOUS = "anonymous"
AUTOMATIC = "shadow-evaluation"  # the actor of decisions the API takes by itself


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, action: str, series_id: str, actor: str, **fields: Any) -> dict[str, Any]:
        entry = {"time": utcnow().isoformat(), "action": action, "series_id": series_id,
                 "actor": actor, **fields}
        line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)  # an audit entry the caller was told about must survive a crash
            finally:
                os.close(fd)
        return entry

    def entries(self, series_id: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open() as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in rows if series_id is None or r.get("series_id") == series_id]


def current_actor(request: Request, x_actor: Annotated[str | None, Header()] = None) -> str:
    """Who is making the request: the verified token's subject when authentication is on
    (the header is then ignored: anyone could send it), else the `X-Actor` header."""
    subject = authenticated_subject(request)
    if subject is not None:
        return subject
    if x_actor is None or not x_actor.strip():
        return ANONYMOUS
    actor = x_actor.strip()
    if len(actor) > 128 or not (actor.isascii() and actor.isprintable()):
        raise InvalidInput("X-Actor must be 1 to 128 printable ASCII characters")
    return actor


ActorDep = Annotated[str, Depends(current_actor)]
