"""A short soak (tests/support/soak.py; ``benchmarks/run.py --soak SECONDS`` runs it at full length):
32 callers of streamed calls for 30 s while the plugin is SIGKILLed every 3 s and the daemon is
restarted (SIGTERM, then started again) in the middle. Every call ends with its whole answer, an
error event, or a refusal before it started; none is truncated silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtimes.local.local_runtime_support import SHARED_WORK
from tests.support.soak import ERROR, WHOLE, Soak, start_soak_daemon

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_short_soak_with_plugin_kills_and_a_daemon_restart(tmp_path: Path) -> None:
    soak = Soak(await start_soak_daemon(tmp_path / "home", SHARED_WORK), callers=32, seconds=30, kill_every=3)
    try:
        report = await soak.run()
    finally:
        soak.daemon.stop()
    print(report.as_dict())
    assert report.ok, report.as_dict()
    assert report.restarts == 1 and report.plugin_kills >= 2, report.as_dict()
    assert report.outcomes[WHOLE] >= 10, report.as_dict()
    assert report.outcomes[ERROR] > 0, report.as_dict()  # the kills and the restart did cut calls, truthfully
