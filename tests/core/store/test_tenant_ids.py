"""Tenant ids where the Go schema stores them as uuid (PostgreSQL) or char(36) (MySQL): a tenant id
that is not a UUID is a bad request, said plainly; ids that name nothing find nothing."""

from __future__ import annotations

from tests.core.test_management_api import TENANT, envelope, error_of
from tests.support.daemon_server import running_daemon


def test_a_tenant_id_that_is_not_a_uuid(make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with running_daemon(make_settings(DATABASE_URL=database_url, PLATFORM="memory")) as server:
        answer = server.client.get("/plugin/tenant-1/management/list", params={"page": 1, "page_size": 10})
        if database_url.startswith("sqlite"):
            assert envelope(answer) == {"list": [], "total": 0}
        else:
            error = error_of(answer)
            assert error["error_type"] == "PluginDaemonBadRequestError"
            assert error["message"] == "tenant_id 'tenant-1' is not a UUID; this database stores tenant ids as uuid"
        missing = server.client.get(f"/plugin/{TENANT}/management/install/tasks/not-a-task-id")
        assert error_of(missing)["error_type"] == "PluginDaemonNotFoundError"
