"""The provider contract: a cloud where the connector deploys and runs functions.

A provider is a stevedore driver in the namespace ``plugin_daemon.serverless.providers``::

    [project.entry-points."plugin_daemon.serverless.providers"]
    my_cloud = "my_package.provider:MyCloudProvider"

built once per connector with its :class:`ConnectorOptions`, and chosen with
``plugin-daemon connector --provider my_cloud``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import anyio
from plugin_daemon.packages import PackageError, decode_package
from stevedore import driver

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from plugin_daemon.packages.decode import DecodedPackage
    from starlette.routing import BaseRoute

    from ..sri import FunctionInfo, LaunchEvent
    from .options import ConnectorOptions

NAMESPACE = "plugin_daemon.serverless.providers"


class LaunchFailed(Exception):
    """A launch cannot go on; the message says why (it becomes the ``failed`` event's message)."""


def check_launch_package(filename: str, package: bytes, metadata: dict[str, Any], *, max_size: int) -> DecodedPackage:
    """The package of a launch, decoded; it must be the one its filename and metadata name."""
    try:
        decoded = decode_package(package, max_size=max_size)
    except PackageError as exc:
        raise LaunchFailed(f"invalid package: {exc.message}") from exc
    identifier = str(decoded.identifier)
    wanted = metadata.get("plugin_unique_identifier")
    if wanted and wanted != identifier:
        raise LaunchFailed(f"the package is {identifier}, not {wanted}")
    parsed = decoded.identifier
    expected = f"{parsed.author}@{parsed.name}@{parsed.version}@{decoded.checksum}.difypkg"
    if filename != expected:
        raise LaunchFailed(f"the package file is named {filename!r}; its content is {expected!r}")
    return decoded


class Provider(ABC):
    """Deploys packages as functions and finds them again."""

    def __init__(self, options: ConnectorOptions) -> None:
        self.options = options

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Background work for the connector's lifetime; call ``task_status.started()`` when ready."""
        task_status.started()
        await anyio.sleep_forever()

    @abstractmethod
    async def find(self, filename: str) -> FunctionInfo | None:
        """The function deployed for ``author@name@version@checksum.difypkg``, if any."""

    @abstractmethod
    def launch(
        self, filename: str, package: bytes, *, verified: bool, metadata: dict[str, Any]
    ) -> AsyncIterator[LaunchEvent]:
        """Deploy a package (or join a deployment of it under way), yielding its stages.

        Ends with ``run``/``success`` carrying ``endpoint=...,name=...,id=...`` then
        ``end``/``success``, or with a ``failed`` event saying why.
        """

    def routes(self) -> list[BaseRoute]:
        """Extra routes on the connector (paths under ``/v1/`` need the API key)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop what the provider started."""


def load_provider(name: str, options: ConnectorOptions) -> Provider:
    """The provider driver ``name``, built with ``options``."""
    manager: driver.DriverManager[Provider] = driver.DriverManager(
        namespace=NAMESPACE, name=name, invoke_on_load=True, invoke_args=(options,), on_load_failure_callback=_raise
    )
    provider = manager.driver
    if not isinstance(provider, Provider):
        raise TypeError(f"serverless provider {name!r} is not a Provider")
    return provider


def _raise(manager: Any, entry_point: Any, exc: BaseException) -> None:
    raise exc


def provider_names() -> list[str]:
    """The installed providers."""
    return sorted(entry_point.name for entry_point in entry_points(group=NAMESPACE))
