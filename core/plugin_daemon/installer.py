"""Install tasks: truthful states (pending → running → success | failed) with progress.

A plugin of a task is ``success`` only once its runtime has it ready to answer, and only then is
it recorded as installed for the tenant. Installing an identifier the tenant already has is a
no-op that succeeds at once (idempotent by package checksum).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import delete, select

from plugin_daemon import metrics
from plugin_daemon.errors import BadRequest, DaemonError, NotFound, internal_error
from plugin_daemon.manager import _iso, parse_identifier
from plugin_daemon.runtime import PluginUnavailable
from plugin_daemon.store.models import InstallTaskRow

if TYPE_CHECKING:
    from plugin_daemon.daemon import Daemon

log = logging.getLogger(__name__)

PENDING, RUNNING, SUCCESS, FAILED = "pending", "running", "success", "failed"
MAX_IDENTIFIERS = 64


def task_entity(row: InstallTaskRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "tenant_id": row.tenant_id,
        "status": row.status,
        "total_plugins": row.total_plugins,
        "completed_plugins": row.completed_plugins,
        "plugins": row.plugins,
    }


class Installer:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        #: task rows are read, changed and written back; one writer at a time keeps every change
        self._writing = threading.Lock()
        #: (tenant_id, plugin_id) -> id of the task installing it now (dispatch names it in its error)
        self.installing: dict[tuple[str, str], str] = {}
        #: identifier -> installs of it under way (its folder must not be removed meanwhile)
        self._preparing: dict[str, int] = {}

    @property
    def db(self):  # noqa: ANN201
        return self.daemon.database

    # --- starting ---------------------------------------------------------------------
    def create_task(
        self, tenant_id: str, identifiers: list[str], source: str, metas: list[dict[str, Any]]
    ) -> tuple[InstallTaskRow | None, list[int]]:
        """Validate the request and record the task; returns it and the indexes left to install.

        When every plugin is installed already there is nothing to do and no task (as in the Go daemon).
        """
        if not identifiers:
            raise BadRequest("plugin_unique_identifiers must name at least one plugin")
        if len(identifiers) > MAX_IDENTIFIERS:
            raise BadRequest(f"at most {MAX_IDENTIFIERS} plugins can be installed in one task")
        if metas and len(metas) != len(identifiers):
            raise BadRequest("metas must have one entry per plugin_unique_identifier")
        manager = self.daemon.manager
        plugins: list[dict[str, Any]] = []
        todo: list[int] = []
        for index, identifier in enumerate(identifiers):
            parsed = parse_identifier(identifier)
            row = manager.declaration_row(identifier)
            if row is None:
                raise NotFound(f"plugin package {identifier} is not known; upload it first")
            declaration = row.declaration
            installed = manager.installation(tenant_id, parsed.plugin_id)
            done = installed is not None and installed.identifier == identifier
            if not done:
                todo.append(index)
            plugins.append(
                {
                    "plugin_unique_identifier": identifier,
                    "plugin_id": parsed.plugin_id,
                    "status": SUCCESS if done else PENDING,
                    "message": "already installed" if done else "waiting to install",
                    "icon": declaration.get("icon", ""),
                    "icon_dark": declaration.get("icon_dark"),
                    "labels": declaration.get("label") or {"en_US": parsed.plugin_id},  # Dify requires en_US
                    "source": source,
                }
            )
        if not todo:
            return None, todo
        task = InstallTaskRow(
            tenant_id=tenant_id,
            status=PENDING,
            total_plugins=len(identifiers),
            completed_plugins=len(identifiers) - len(todo),
            plugins=plugins,
        )
        with self.db.transaction() as session:
            session.add(task)
        return task, todo

    async def start(
        self, tenant_id: str, identifiers: list[str], source: str, metas: list[dict[str, Any]]
    ) -> dict[str, Any]:
        task, todo = await anyio.to_thread.run_sync(self.create_task, tenant_id, identifiers, source, metas)
        if task is None:
            return {"all_installed": True, "task_id": ""}
        self.daemon.task_group.start_soon(self._run, task.id, tenant_id, identifiers, source, metas, todo)
        return {"all_installed": False, "task_id": task.id}

    # --- running ----------------------------------------------------------------------
    def _update(self, task_id: str, index: int | None = None, **changes: Any) -> None:
        with self._writing, self.db.transaction() as session:
            row = session.get(InstallTaskRow, task_id)
            if row is None:  # deleted by the caller meanwhile; the install itself goes on
                return
            if index is not None:
                if set(changes) == {"message"} and row.plugins[index]["status"] != RUNNING:
                    return  # a late progress line must not overwrite a final message
                plugins = [dict(item) for item in row.plugins]
                plugins[index].update(changes)
                row.plugins = plugins
                row.completed_plugins = sum(1 for item in plugins if item["status"] in (SUCCESS, FAILED))
                statuses = {item["status"] for item in plugins}
                if statuses <= {SUCCESS}:
                    row.status = SUCCESS
                elif statuses <= {SUCCESS, FAILED}:
                    row.status = FAILED
                else:
                    row.status = RUNNING
            else:
                for key, value in changes.items():
                    setattr(row, key, value)

    async def _set(self, task_id: str, index: int, **changes: Any) -> None:
        await anyio.to_thread.run_sync(functools.partial(self._update, task_id, index, **changes))

    async def _run(
        self,
        task_id: str,
        tenant_id: str,
        identifiers: list[str],
        source: str,
        metas: list[dict[str, Any]],
        todo: list[int],
    ) -> None:
        for index in todo:
            identifier = identifiers[index]
            meta = metas[index] if metas else {}
            await self._set(task_id, index, status=RUNNING, message="installing")
            key = (tenant_id, parse_identifier(identifier).plugin_id)
            self.installing[key] = task_id
            self._preparing[identifier] = self._preparing.get(identifier, 0) + 1
            started, outcome = time.monotonic(), "failed"
            try:
                await self.install_one(task_id, index, tenant_id, identifier, source, meta)
                outcome = "success"
            except (PluginUnavailable, DaemonError) as exc:
                message = exc.message
                log.warning("install of %s for tenant %s failed: %s", identifier, tenant_id, message)
                await self._set(task_id, index, status=FAILED, message=message)
            except Exception as exc:  # an unexpected bug must still end the task truthfully
                log.exception("install of %s failed", identifier)
                await self._set(task_id, index, status=FAILED, message=internal_error(exc).message)
            finally:
                if self.installing.get(key) == task_id:
                    del self.installing[key]
                self._preparing[identifier] -= 1
                if not self._preparing[identifier]:
                    del self._preparing[identifier]
                if outcome == "failed":  # what it extracted and built is of no use now
                    runtime_type = (
                        str(meta.get("runtime_type") or "") or self.daemon.control_panel.default_runtime_type()
                    )
                    self.daemon.task_group.start_soon(self.daemon.discard_unused, identifier, runtime_type)
                metrics.INSTALLATIONS.inc((key[1], outcome))  # Go's plugin_installations_total
                metrics.INSTALLATION_DURATION.observe((key[1],), time.monotonic() - started)

    async def install_one(
        self, task_id: str, index: int, tenant_id: str, identifier: str, source: str, meta: dict[str, Any]
    ) -> None:
        daemon = self.daemon
        # ``metas[i].runtime_type`` picks the runtime of one installation; PLATFORM is the default
        runtime_type = str(meta.get("runtime_type") or "") or daemon.control_panel.default_runtime_type()
        runtime = daemon.control_panel.runtime(runtime_type)
        spec = await daemon.control_panel.spec(identifier)
        if spec.package_path is None:
            raise NotFound(f"the package of {identifier} is missing from the package store; upload it again")

        last_progress = ""

        def progress(line: str) -> None:
            nonlocal last_progress
            last_progress = line
            daemon.task_group.start_soon(anyio.to_thread.run_sync, lambda: self._update(task_id, index, message=line))

        with anyio.fail_after(daemon.settings.install_timeout_seconds):
            await runtime.ensure_ready(spec, timeout=daemon.settings.install_timeout_seconds, progress=progress)
        _, retired = await anyio.to_thread.run_sync(
            lambda: daemon.manager.install(tenant_id, identifier, runtime_type=runtime_type, source=source, meta=meta)
        )
        if retired is not None:  # an upgrade, and nobody uses the old version any more
            daemon.task_group.start_soon(daemon.retire, retired.identifier, retired.runtime_type)
        await anyio.to_thread.run_sync(lambda: self._update(task_id, index, status=SUCCESS, message="installed"))

    def preparing(self, identifier: str) -> bool:
        """Whether an install of ``identifier`` is under way."""
        return identifier in self._preparing

    # --- reading and deleting -----------------------------------------------------------
    def get(self, tenant_id: str, task_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            row = session.get(InstallTaskRow, task_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"install task {task_id} not found")
            return task_entity(row)

    def list(self, tenant_id: str, page: int, page_size: int) -> list[dict[str, Any]]:
        with self.db.transaction() as session:
            rows = session.scalars(
                select(InstallTaskRow)
                .where(InstallTaskRow.tenant_id == tenant_id)
                .order_by(InstallTaskRow.created_at.desc(), InstallTaskRow.id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
            return [task_entity(row) for row in rows]

    def delete(self, tenant_id: str, task_id: str | None = None) -> None:
        with self.db.transaction() as session:
            query = delete(InstallTaskRow).where(InstallTaskRow.tenant_id == tenant_id)
            if task_id is not None:
                query = query.where(InstallTaskRow.id == task_id)
            session.execute(query)

    def delete_item(self, tenant_id: str, task_id: str, identifier: str) -> None:
        with self._writing, self.db.transaction() as session:
            row = session.get(InstallTaskRow, task_id)
            if row is None or row.tenant_id != tenant_id:
                return
            plugins = [item for item in row.plugins if item["plugin_unique_identifier"] != identifier]
            if not plugins:
                session.delete(row)
                return
            row.plugins = plugins
            row.total_plugins = len(plugins)
            row.completed_plugins = sum(1 for item in plugins if item["status"] in (SUCCESS, FAILED))

    def fail_interrupted(self) -> int:
        """At start: tasks left pending or running by a previous process can no longer finish."""
        count = 0
        with self.db.transaction() as session:
            rows = session.scalars(select(InstallTaskRow).where(InstallTaskRow.status.in_([PENDING, RUNNING])))
            for row in rows:
                plugins = [dict(item) for item in row.plugins]
                for item in plugins:
                    if item["status"] in (PENDING, RUNNING):
                        item["status"] = FAILED
                        item["message"] = "the daemon restarted before this install finished; install it again"
                row.plugins = plugins
                row.status = FAILED
                row.completed_plugins = row.total_plugins
                count += 1
        return count
