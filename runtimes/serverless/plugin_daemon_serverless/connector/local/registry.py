"""The emulator's deployed functions, kept in ``<home>/functions.json`` so a restart finds them."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class FunctionEntry:
    filename: str  # author@name@version@checksum.difypkg
    name: str
    id: str
    identifier: str
    checksum: str
    package: str  # path of the kept .difypkg
    declaration: dict[str, Any]
    verified: bool = False


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, FunctionEntry] = {}  # by filename

    def load(self) -> None:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        self.entries = {filename: FunctionEntry(**entry) for filename, entry in raw.items()}

    def add(self, entry: FunctionEntry) -> None:
        self.entries[entry.filename] = entry
        self._save()

    def by_name(self, name: str) -> FunctionEntry | None:
        return next((entry for entry in self.entries.values() if entry.name == name), None)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        data = {filename: asdict(entry) for filename, entry in self.entries.items()}
        temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)
