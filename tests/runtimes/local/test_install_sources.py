"""What a package may ask of its own dependency install (PLUGIN_PACKAGE_INDEX_OPTIONS).

The rule itself on package folders, then through the local runtime: a package whose
requirements.txt includes the daemon's key file gets an install error that names the line and
never shows the key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest
from plugin_daemon.runtime import PluginUnavailable
from plugin_daemon_local import LocalRuntime
from plugin_daemon_local.install_sources import PackageSourceRefused, check_package_sources

from tests.runtimes.local.local_runtime_support import PLUGINS, make_settings, package_spec


def package(tmp_path: Path, requirements: str | None = None, pyproject: str | None = None) -> Path:
    folder = tmp_path / "pkg"
    folder.mkdir(exist_ok=True)
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    if pyproject is not None:
        (folder / "pyproject.toml").write_text(pyproject)
    return folder


@pytest.mark.parametrize(
    "requirements",
    [
        "-r ../../../server_key\n",
        "--requirement=/etc/passwd\n",
        "-c ../constraints.txt\n",
        "-e ../other_plugin\n",
        "--find-links ../../wheels\n",
        "dify_plugin==0.7.4\n./../outside.whl\n",
        "-r https://example.invalid/more.txt\n",
    ],
)
def test_files_outside_the_package_are_refused_under_any_rule(tmp_path: Path, requirements: str) -> None:
    folder = package(tmp_path, requirements)
    for rule in ("local", "any"):
        with pytest.raises(PackageSourceRefused):
            check_package_sources(folder, rule)


def test_an_include_that_links_outside_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "server_key"
    secret.write_text("the key")
    folder = package(tmp_path, "-r more.txt\n")
    (folder / "more.txt").symlink_to(secret)
    with pytest.raises(PackageSourceRefused, match="outside the package"):
        check_package_sources(folder, "any")


@pytest.mark.parametrize(
    "requirements",
    [
        "--index-url https://index.example.invalid/simple\ndify_plugin\n",
        "-ihttps://index.example.invalid/simple\n",
        "--extra-index-url=https://index.example.invalid/simple\n",
        "--trusted-host index.example.invalid\n",
        "--find-links https://index.example.invalid/wheels/\n",
        "evil @ https://index.example.invalid/evil-1.0-py3-none-any.whl\n",
        "git+https://index.example.invalid/evil.git#egg=evil\n",
        "dify_plugin==0.7.4 \\\n  --index-url https://index.example.invalid/simple\n",
    ],
)
def test_indexes_and_remote_sources_of_the_package_follow_the_rule(tmp_path: Path, requirements: str) -> None:
    folder = package(tmp_path, requirements)
    with pytest.raises(PackageSourceRefused, match="PLUGIN_PACKAGE_INDEX_OPTIONS=local"):
        check_package_sources(folder, "local")
    check_package_sources(folder, "any")  # as the Go daemon: followed


def test_an_air_gapped_package_with_its_own_wheels_passes(tmp_path: Path) -> None:
    folder = package(tmp_path, "--no-index\n--find-links=./wheels/\n-r extra.txt  # more\ndify_plugin==0.7.4\n")
    extra = "-f wheels\nrequests>=2 ; python_version >= '3.8'\n./wheels/local-1.0-py3-none-any.whl\n"
    (folder / "extra.txt").write_text(extra)
    (folder / "wheels").mkdir()
    check_package_sources(folder, "local")


@pytest.mark.parametrize(
    ("pyproject", "refused_under_any"),
    [
        ('[project]\nname = "p"\n[[tool.uv.index]]\nurl = "https://index.example.invalid/simple"\n', False),
        ('[project]\nname = "p"\n[tool.uv]\nindex-url = "https://index.example.invalid/simple"\n', False),
        ('[project]\nname = "p"\n[tool.uv.sources]\nevil = { git = "https://example.invalid/evil.git" }\n', False),
        ('[project]\nname = "p"\ndependencies = ["evil @ https://index.example.invalid/evil.whl"]\n', False),
        ('[project]\nname = "p"\n[tool.uv.sources]\nsecret = { path = "../../.." }\n', True),
    ],
)
def test_pyproject_sources_follow_the_rule(tmp_path: Path, pyproject: str, refused_under_any: bool) -> None:
    folder = package(tmp_path, pyproject=pyproject)
    with pytest.raises(PackageSourceRefused):
        check_package_sources(folder, "local")
    if refused_under_any:
        with pytest.raises(PackageSourceRefused):
            check_package_sources(folder, "any")
    else:
        check_package_sources(folder, "any")


def test_a_lock_with_a_remote_source_follows_the_rule(tmp_path: Path) -> None:
    lock = '[[package]]\nname = "evil"\nsource = { url = "https://example.invalid/evil.whl" }\n'
    folder = package(tmp_path, pyproject='[project]\nname = "p"\n')
    (folder / "uv.lock").write_text(lock)
    with pytest.raises(PackageSourceRefused, match="uv.lock: 'evil'"):
        check_package_sources(folder, "local")
    check_package_sources(folder, "any")
    (folder / "uv.lock").write_text('[[package]]\nname = "p"\nsource = { editable = "../.." }\n')
    with pytest.raises(PackageSourceRefused, match="outside the package"):
        check_package_sources(folder, "any")


@pytest.mark.anyio
async def test_an_install_that_includes_the_key_file_fails_without_showing_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "server_key").write_text("very-secret-server-key\n")
    folder = tmp_path / "echo_tool"
    shutil.copytree(PLUGINS / "echo_tool", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "requirements.txt").write_text("-r ../../../server_key\n" + (folder / "requirements.txt").read_text())
    packages = tmp_path / "packages"
    packages.mkdir()
    spec = package_spec(folder, packages)
    settings = make_settings(home, PLUGIN_WORKING_PATH=home / "cwd")
    async with LocalRuntime(settings) as runtime:
        with anyio.fail_after(60), pytest.raises(PluginUnavailable) as failure:
            await runtime.ensure_ready(spec, timeout=60)
    message = str(failure.value)
    assert "requirements.txt: -r '../../../server_key'" in message and "outside the package" in message
    assert "very-secret-server-key" not in message
