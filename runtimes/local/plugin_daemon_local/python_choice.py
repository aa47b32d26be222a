"""Which Python a plugin's environment is built with, and why.

The plugin's own ``requires-python`` decides (``[project]`` of pyproject.toml, and the one
uv.lock records when the package carries one: both must hold). Its manifest's
``meta.runner.version`` is used when it satisfies that requirement; otherwise the compatible
interpreter of ``DEFAULT_VERSION`` (3.12, the one the Go daemon always uses), else the highest
compatible one. A plugin that declares no requirement (requirements.txt alone) gets the
version its manifest names, as before.

When no interpreter on the machine satisfies the requirement, uv is asked for one (and may
download a managed Python) if ``UV_PYTHON_DOWNLOADS`` allows it; otherwise the install fails
with :class:`NoSuitablePython`, naming the requirement and the interpreters found.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from .interpreters import DEFAULT_VERSION, Interpreter, InterpreterFinder, requested_version

logger = logging.getLogger(__name__)


class NoSuitablePython(Exception):
    """No interpreter satisfies the plugin's ``requires-python``; the message says what was found."""


@dataclass(frozen=True)
class PythonRequirement:
    """A plugin's ``requires-python`` and the file(s) it comes from."""

    specifier: SpecifierSet
    source: str

    def allows(self, version: str) -> bool:
        return self.specifier.contains(version, prereleases=True)

    def __str__(self) -> str:
        return f"requires-python {self.specifier} ({self.source})"


def read_requirement(workdir: Path) -> PythonRequirement | None:
    """The ``requires-python`` of the plugin extracted in ``workdir``; None when it declares none."""
    specifiers: list[SpecifierSet] = []
    sources: list[str] = []
    for name, table in (("pyproject.toml", "project"), ("uv.lock", None)):
        text = _requires_python(workdir / name, table)
        if text is None:
            continue
        try:
            specifiers.append(SpecifierSet(text))
        except InvalidSpecifier:
            logger.warning("ignoring the unreadable requires-python %r of %s", text, workdir / name)
            continue
        sources.append(name)
    if not specifiers:
        return None
    combined = SpecifierSet()
    for specifier in specifiers:
        combined &= specifier
    return PythonRequirement(combined, " and ".join(sources))


def _requires_python(path: Path, table: str | None) -> str | None:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    section = data.get(table) if table else data
    value = section.get("requires-python") if isinstance(section, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


@dataclass(frozen=True)
class PythonChoice:
    """The interpreter to build with, or (``interpreter`` None) what to ask uv for."""

    interpreter: Interpreter | None
    uv_request: str
    #: Why this one, for the install log; empty when the manifest's version simply applied.
    reason: str

    @property
    def python_argument(self) -> str:
        """What ``uv venv --python`` gets."""
        return self.interpreter.path if self.interpreter is not None else self.uv_request

    @property
    def label(self) -> str:
        if self.interpreter is not None:
            return f"Python {self.interpreter.short_version}"
        return f"a Python from uv ({self.uv_request})"


async def choose_python(
    finder: InterpreterFinder, declaration: dict[str, Any], workdir: Path, *, downloads: str
) -> PythonChoice:
    """Pick the interpreter of a plugin; see the module docstring for the rules."""
    wanted = requested_version(declaration)
    requirement = read_requirement(workdir)
    if requirement is None:
        return PythonChoice(await finder.find(wanted), wanted, "")
    found = await finder.every()
    compatible = [interpreter for interpreter in found if requirement.allows(interpreter.version)]
    if not compatible:  # one may have been installed since the last look
        found = await finder.every(refresh=True)
        compatible = [interpreter for interpreter in found if requirement.allows(interpreter.version)]
    named = [interpreter for interpreter in compatible if interpreter.short_version == wanted]
    if named:
        return PythonChoice(named[0], wanted, f"meta.runner.version {wanted} satisfies {requirement}")
    if requirement.allows(f"{wanted}.0") or requirement.allows(f"{wanted}.99"):
        why = f"no Python {wanted} (meta.runner.version) found"
    else:
        why = f"meta.runner.version {wanted} does not satisfy {requirement}"
    preferred = [interpreter for interpreter in compatible if interpreter.short_version == DEFAULT_VERSION]
    if preferred:
        return PythonChoice(preferred[0], wanted, f"{why}; {DEFAULT_VERSION} is preferred, as the Go daemon uses it")
    if compatible:
        return PythonChoice(compatible[0], wanted, f"{why}; the highest compatible one found")
    seen = ", ".join(f"{interpreter.version} ({interpreter.path})" for interpreter in found) or "none"
    if downloads != "never":
        request = DEFAULT_VERSION if requirement.allows(f"{DEFAULT_VERSION}.0") else str(requirement.specifier)
        return PythonChoice(
            None,
            request,
            f"no interpreter here satisfies {requirement} (found: {seen}); "
            f"uv provides one (UV_PYTHON_DOWNLOADS={downloads})",
        )
    raise NoSuitablePython(
        f"no Python on this machine satisfies the plugin's {requirement} (its manifest asks for {wanted}); "
        f"interpreters found: {seen}. Install a matching Python (PATH, pyenv, /usr/bin) or set "
        "UV_PYTHON_DOWNLOADS=automatic to let uv download one"
    )
