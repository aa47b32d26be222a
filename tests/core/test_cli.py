"""The command line: package, plugins, and serve as a real process on its embedded defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner
from plugin_daemon.cli import cli
from plugin_daemon.packages import decode_package

from tests.support.daemon_server import free_port
from tests.support.waiting import wait_for

ECHO_TOOL = Path(__file__).parents[1] / "plugins" / "echo_tool"


def test_package_builds_a_valid_difypkg(tmp_path: Path) -> None:
    target = tmp_path / "echo.difypkg"
    result = CliRunner().invoke(cli, ["package", str(ECHO_TOOL), "-o", str(target)])
    assert result.exit_code == 0, result.output
    decoded = decode_package(target.read_bytes())
    assert str(decoded.identifier) in result.output
    assert decoded.identifier.plugin_id == "tester/echo_tool"


def test_package_refuses_a_bad_folder_clearly(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text("version: banana\n")
    result = CliRunner().invoke(cli, ["package", str(tmp_path), "-o", str(tmp_path / "x.difypkg")])
    assert result.exit_code != 0
    assert "Error" in result.output
    assert not (tmp_path / "x.difypkg").exists()


def test_plugins_lists_the_loaded_extensions() -> None:
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "plugin-daemon-local" in result.output
    assert "runtimes:" in result.output and "local" in result.output


def serve(cwd: Path, port: int) -> subprocess.Popen[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("SERVER_", "DB_", "PLUGIN_"))}
    environ["PLUGIN_REMOTE_INSTALLING_PORT"] = "0"  # a free port: a taken one stops the start
    return subprocess.Popen(
        [sys.executable, "-m", "plugin_daemon.cli", "serve", "--port", str(port)],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/check", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_on_embedded_defaults_keeps_state_in_one_folder_and_a_generated_key(tmp_path: Path) -> None:
    port = free_port()
    first = serve(tmp_path, port)
    try:
        wait_for(lambda: healthy(port) or first.poll() is not None, 60, "the daemon to answer")
        assert first.poll() is None
    finally:
        output = stop(first)
    home = tmp_path / "plugin-daemon-data"
    key_file = home / "server_key"
    key = key_file.read_text().strip()
    assert key and key in output, output
    assert key_file.stat().st_mode & 0o077 == 0
    assert (home / "plugin_daemon.db").is_file()

    second = serve(tmp_path, port)
    try:
        wait_for(lambda: healthy(port) or second.poll() is not None, 60, "the daemon to answer again")
        listing = httpx.get(
            f"http://127.0.0.1:{port}/plugin/t/management/list?page=1&page_size=10", headers={"X-Api-Key": key}
        )
        assert listing.json()["code"] == 0
        assert httpx.get(f"http://127.0.0.1:{port}/plugin/t/management/list").status_code == 401
    finally:
        output = stop(second)
    assert key not in output  # printed once only


def refused_serve(tmp_path: Path, **environ: str) -> str:
    """Run ``serve`` with these settings, expecting it to refuse to start; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "plugin_daemon.cli", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=dict(os.environ, **environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_serve_refuses_a_public_default_key(tmp_path: Path) -> None:
    from plugin_daemon.config import PUBLIC_DEFAULT_KEYS

    assert "publicly known" in refused_serve(tmp_path, SERVER_KEY=sorted(PUBLIC_DEFAULT_KEYS)[0])


def test_serve_refuses_to_pass_a_secret_to_plugins(tmp_path: Path) -> None:
    output = refused_serve(tmp_path, SERVER_KEY="a-key-nobody-knows", PLUGIN_EXTRA_ENV="HF_HOME DIFY_INNER_API_KEY")
    assert "PLUGIN_EXTRA_ENV: DIFY_INNER_API_KEY is one of the daemon's secrets" in output
    assert "Traceback" not in output


def test_install_uploads_and_follows_the_task(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import TEST_KEY
    from tests.support.daemon_server import running_daemon

    package = tmp_path / "echo.difypkg"
    assert CliRunner().invoke(cli, ["package", str(ECHO_TOOL), "-o", str(package)]).exit_code == 0
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        arguments = ["install", str(package), "--tenant", "t1", "--url", server.url, "--key", TEST_KEY]
        result = CliRunner().invoke(cli, arguments)
        assert result.exit_code == 0, result.output
        assert "installed tester/echo_tool" in result.output
        listing = server.client.get("/plugin/t1/management/list", params={"page": 1, "page_size": 5}).json()
        assert listing["data"]["total"] == 1

        again = CliRunner().invoke(cli, arguments)
        assert again.exit_code == 0, again.output
        assert "is installed for tenant t1 already" in again.output

        identifier = listing["data"]["list"][0]["plugin_unique_identifier"]
        wrong_key = CliRunner().invoke(
            cli, ["install", str(package), "--tenant", "t2", "--url", server.url, "--key", "no"]
        )
        assert wrong_key.exit_code != 0 and "unauthorized" in wrong_key.output

        server.daemon.control_panel.runtime("memory").failing[identifier] = "no room left"
        failed = CliRunner().invoke(
            cli, ["install", str(package), "--tenant", "t2", "--url", server.url, "--key", TEST_KEY]
        )
        assert failed.exit_code != 0
        assert "install failed: no room left" in failed.output
