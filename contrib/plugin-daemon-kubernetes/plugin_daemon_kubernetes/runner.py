"""The generic runner: what the runner image starts in every plugin's pod (standard library only).

It fetches the package from the connector (``DIFY_PLUGIN_PACKAGE_URL``, a link the connector
signed for this package), unpacks it, builds its environment (uv when the image has it, else
``venv`` and pip), then replaces itself with the plugin under the SDK's serverless mode:
``/invoke`` and ``/health`` on ``0.0.0.0:$SERVERLESS_PORT`` (8080). The Service (or the Knative
Service) routes the daemon's calls there; readiness is the SDK's ``/health``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

FETCH_TIMEOUT = 120


def fetch(url: str, destination: Path) -> None:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response, open(destination, "wb") as handle:  # noqa: S310
        shutil.copyfileobj(response, handle)


def unpack(archive: Path, folder: Path) -> None:
    root = folder.resolve()
    with zipfile.ZipFile(archive) as opened:
        for name in opened.namelist():
            if not (root / name).resolve().is_relative_to(root):
                raise SystemExit(f"runner: the package entry {name!r} escapes its folder")
        opened.extractall(root)


def build_environment(plugin: Path, venv: Path) -> Path:
    requirements = ["-r", str(plugin / "requirements.txt")] if (plugin / "requirements.txt").is_file() else []
    if not requirements and (plugin / "pyproject.toml").is_file():
        requirements = ["-r", str(plugin / "pyproject.toml")]
    uv = shutil.which("uv")
    python = venv / "bin" / "python"
    if uv:
        subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
        if requirements:
            subprocess.run([uv, "pip", "install", "--python", str(python), *requirements], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        if requirements:
            subprocess.run([str(python), "-m", "pip", "install", "--no-input", *requirements], check=True)
    return python


def main() -> None:
    url = os.environ["DIFY_PLUGIN_PACKAGE_URL"]
    work = Path(os.environ.get("DIFY_PLUGIN_WORK_DIR", "/tmp/dify-plugin"))
    plugin, venv = work / "plugin", work / "venv"
    work.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():  # a restarted container keeps its emptyDir
        archive = work / "package.difypkg"
        fetch(url, archive)
        shutil.rmtree(plugin, ignore_errors=True)
        unpack(archive, plugin)
        python = build_environment(plugin, venv)
    else:
        python = venv / "bin" / "python"
    entrypoint = os.environ.get("DIFY_PLUGIN_ENTRYPOINT", "main")
    env = dict(os.environ)
    env.update(
        {
            "INSTALL_METHOD": "serverless",
            "SERVERLESS_HOST": env.get("SERVERLESS_HOST", "0.0.0.0"),  # noqa: S104 - the pod's port
            "SERVERLESS_PORT": env.get("SERVERLESS_PORT", "8080"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.chdir(plugin)
    os.execve(str(python), [str(python), "-m", entrypoint], env)


if __name__ == "__main__":
    main()
