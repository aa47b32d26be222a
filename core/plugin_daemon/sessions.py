"""The session manager: one session per dispatch call, tracked until it ends.

A session belongs to the daemon, not to the caller's connection: when the caller goes away the
session keeps running to its ``end`` (a plugin's later backwards calls find their context and get
an answer, never "session not found"), and only then is it removed. A dispatch session whose
caller has gone is *abandoned*: its calls to Dify are refused, since nobody would read what they
cost; a plugin endpoint's session is not (a webhook's caller often leaves before the work is done).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from plugin_daemon.logs import log_context
from plugin_daemon.metrics import session_ended


@dataclass(slots=True)
class Session:
    id: str
    tenant_id: str
    user_id: str
    plugin_id: str
    identifier: str
    runtime_type: str
    access_type: str
    action: str
    declaration: dict[str, Any]
    state: str = "running"
    created_at: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    #: anything the runtime or extensions want to keep with the session
    extras: dict[str, Any] = field(default_factory=dict)
    #: how the call went, for metrics (Go's statuses): success, error or timeout
    outcome: str = "success"
    #: the caller of the dispatch has gone: the plugin's calls to Dify are refused from now on
    abandoned: bool = False
    #: set by a dispatch whose caller can leave: starts watching for that (called before each call to Dify)
    watch_caller: Callable[[], None] | None = None
    _on_abandon: list[Callable[[], None]] = field(default_factory=list)

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def abandon(self) -> None:
        """The caller has gone: refuse the plugin's further calls to Dify and stop those under way."""
        self.abandoned = True
        callbacks, self._on_abandon = self._on_abandon, []
        for callback in callbacks:
            callback()

    def when_abandoned(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the session is abandoned; returns a function that forgets it."""
        self._on_abandon.append(callback)
        return lambda: self._on_abandon.remove(callback) if callback in self._on_abandon else None

    def as_dict(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "plugin_id": self.plugin_id,
            "plugin_unique_identifier": self.identifier,
            "runtime_type": self.runtime_type,
            "type": self.access_type,
            "action": self.action,
            "state": self.state,
            "age_seconds": round(now - self.created_at, 3),
            "idle_seconds": round(now - self.last_active, 3),
        }


class SessionManager:
    def __init__(self, *, metrics: bool = False) -> None:
        #: count each ended session in Go's plugin_invocations_total / _duration_seconds
        self.metrics = metrics
        self._sessions: dict[str, Session] = {}
        self._ended: anyio.Event | None = None  # set at the next end, for those waiting on one
        #: told of each session that ends (set only while someone watches a live log)
        self.on_end: Callable[[Session], None] | None = None

    def create(self, **fields: Any) -> Session:
        session = Session(id=str(uuid.uuid4()), **fields)
        self._sessions[session.id] = session
        log_context(session.plugin_id, session.id)  # the caller's task logs with these ids from now on
        return session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def end(self, session: Session, state: str = "ended") -> None:
        session.state = state
        if self._sessions.pop(session.id, None) is not None:
            if self.metrics:
                session_ended(session, "error" if state == "failed" else session.outcome)
            if self.on_end is not None:
                self.on_end(session)
        if self._ended is not None:
            self._ended.set()
            self._ended = None

    async def drained(self, identifier: str, timeout: float) -> bool:
        """Wait until no session of ``identifier`` runs, at most ``timeout`` seconds; returns whether none does."""
        with anyio.move_on_after(timeout):
            while any(session.identifier == identifier for session in self._sessions.values()):
                if self._ended is None:
                    self._ended = anyio.Event()
                await self._ended.wait()
            return True
        return False

    def __len__(self) -> int:
        return len(self._sessions)

    def list(self) -> list[Session]:
        return list(self._sessions.values())
