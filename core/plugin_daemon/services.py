"""Background services: long-lived tasks registered by extensions and run by the app's lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from plugin_daemon.daemon import Daemon


class Service(Protocol):
    """``await service(task_status=...)`` runs until cancelled; ``task_status.started()`` marks it ready."""

    def __call__(self, *, task_status: TaskStatus[None]) -> Awaitable[None]: ...


#: Builds a service for a daemon.
ServiceFactory = Callable[["Daemon"], Service]
