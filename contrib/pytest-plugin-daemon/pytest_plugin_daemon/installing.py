"""Installing a plugin folder the way Dify does: package it, upload it, install it, wait for the task."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from plugin_daemon.packages import PackageError, build_package

from pytest_plugin_daemon.errors import PluginInstallError


@dataclass(frozen=True)
class Installed:
    """What the daemon answered for an installed package."""

    identifier: str  # author/name:version@checksum
    plugin_id: str  # author/name
    declaration: dict[str, Any]


def install_folder(client: httpx.Client, folder: Path, tenant: str, *, timeout: float) -> Installed:
    """Package ``folder``, upload it and install it for ``tenant``; wait at most ``timeout`` seconds."""
    __tracebackhide__ = True  # a failing test points at its own line, not at this module
    try:
        package = build_package(folder)
    except PackageError as exc:
        raise PluginInstallError(f"cannot package {folder}: {exc.message}") from None
    uploaded = _envelope(
        client.post(
            f"/plugin/{tenant}/management/install/upload/package",
            files={"dify_pkg": ("plugin.difypkg", package, "application/octet-stream")},
            data={"verify_signature": "false"},
        ),
        f"uploading the package of {folder}",
    )
    identifier = uploaded["unique_identifier"]
    started = _envelope(
        client.post(
            f"/plugin/{tenant}/management/install/identifiers",
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
        ),
        f"installing {identifier}",
    )
    task: dict[str, Any] = (
        {"status": "success"}
        if started["all_installed"]
        else _wait_task(client, tenant, started["task_id"], identifier, timeout)
    )
    if task["status"] != "success":
        messages = "; ".join(str(item.get("message", "")) for item in task.get("plugins", [])) or "no message"
        raise PluginInstallError(f"installing {identifier} failed: {messages}", task=task)
    author, _, rest = identifier.partition("/")
    return Installed(identifier, f"{author}/{rest.partition(':')[0]}", uploaded.get("manifest") or {})


def _wait_task(client: httpx.Client, tenant: str, task_id: str, identifier: str, timeout: float) -> dict[str, Any]:
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        task: dict[str, Any] = _envelope(
            client.get(f"/plugin/{tenant}/management/install/tasks/{task_id}"), f"reading install task {task_id}"
        )
        if task["status"] in ("success", "failed"):
            return task
        if time.monotonic() > deadline:
            messages = "; ".join(str(item.get("message", "")) for item in task.get("plugins", []))
            raise PluginInstallError(
                f"installing {identifier} did not finish within {timeout:.0f} s "
                f"(task {task_id} is {task['status']}: {messages})",
                task=task,
            )
        time.sleep(interval)  # polling the task with a deadline, as Dify's console does
        interval = min(interval * 2, 0.5)


def _envelope(response: httpx.Response, doing: str) -> Any:
    __tracebackhide__ = True
    try:
        body = response.json()
    except ValueError:
        raise PluginInstallError(f"{doing}: HTTP {response.status_code}, not JSON: {response.text[:500]}") from None
    if not isinstance(body, dict) or body.get("code") != 0:
        raise PluginInstallError(f"{doing}: the daemon answered {body}")
    return body["data"]
