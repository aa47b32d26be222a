"""Launches under way, shared by every provider: one deployment per package, followed by every caller.

A provider gives :meth:`Deployments.launch` the work of one deployment (an async function of the
:class:`Deployment` it reports on); a second launch of the same package while the first runs
follows the first's events instead of deploying again. Every way the work can end is reported:
an expected failure as a ``failed`` event at the stage it was at, anything else as an internal
error, and the deployment is closed in all cases.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ..sri import FAILED, RUNNING, SUCCESS, FunctionInfo, LaunchEvent, run_message
from .provider import check_launch_package

if TYPE_CHECKING:
    from plugin_daemon.packages.decode import DecodedPackage

log = logging.getLogger(__name__)


@dataclass
class Deployment:
    """A launch under way: its events so far; followers replay them and wait for more."""

    events: list[LaunchEvent] = field(default_factory=list)
    finished: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)

    def emit(self, stage: str, state: str, message: str = "") -> None:
        self.events.append(LaunchEvent(stage, state, message))
        self.changed.set()
        self.changed = anyio.Event()

    def launched(self, endpoint: str, name: str, function_id: str) -> None:
        """The function answers at ``endpoint``: ``run``/``success`` then ``end``/``success``."""
        self.emit("run", SUCCESS, run_message(endpoint, name, function_id))
        self.emit("end", SUCCESS, "Plugin launched")

    def already_deployed(self, function: FunctionInfo) -> None:
        self.emit("healthz", SUCCESS, "function already deployed")
        self.launched(function.endpoint, function.name, function.id)

    def failed(self, message: str) -> None:
        stage = self.events[-1].stage if self.events else "healthz"
        self.emit(stage, FAILED, message)

    def finish(self) -> None:
        self.finished = True
        self.changed.set()

    async def follow(self) -> AsyncIterator[LaunchEvent]:
        seen = 0
        while True:
            changed = self.changed
            while seen < len(self.events):
                yield self.events[seen]
                seen += 1
            if self.finished:
                return
            await changed.wait()


Work = Callable[[Deployment], Awaitable[None]]


async def check_new_package(
    deployment: Deployment,
    filename: str,
    package: bytes,
    metadata: dict[str, Any],
    *,
    max_size: int,
    find: Callable[[str], Awaitable[FunctionInfo | None]],
) -> DecodedPackage | None:
    """The ``healthz`` stage of a cloud provider: the package checked, or None (and reported as such)
    when its function is deployed already."""
    deployment.emit("healthz", RUNNING, "checking the package")
    decoded = check_launch_package(filename, package, metadata, max_size=max_size)
    existing = await find(filename)
    if existing is not None:
        deployment.already_deployed(existing)
        return None
    deployment.emit("healthz", SUCCESS, f"package {decoded.identifier}")
    return decoded


class Deployments:
    def __init__(self, provider_name: str, expected: tuple[type[BaseException], ...]) -> None:
        self.provider_name = provider_name
        #: failures reported as they are (their message is the answer); others are internal errors
        self.expected = expected
        self.under_way: dict[str, Deployment] = {}  # by filename
        self.group: TaskGroup | None = None

    async def launch(self, filename: str, work: Work) -> AsyncIterator[LaunchEvent]:
        deployment = self.under_way.get(filename)
        if deployment is None:
            if self.group is None:
                raise RuntimeError(f"the {self.provider_name} provider is not serving")
            deployment = Deployment()
            self.under_way[filename] = deployment
            self.group.start_soon(self._run, filename, deployment, work)
        async for event in deployment.follow():
            yield event

    async def _run(self, filename: str, deployment: Deployment, work: Work) -> None:
        try:
            await work(deployment)
        except self.expected as exc:
            log.warning("launch of %s failed: %s", filename, exc)
            deployment.failed(str(exc) or type(exc).__name__)
        except Exception as exc:
            log.exception("launch of %s failed", filename)
            deployment.emit("end", FAILED, f"internal error: {exc!r}")
        finally:
            self.under_way.pop(filename, None)
            deployment.finish()
