"""Every attack the daemon must stop; each result is "blocked: <why>" or "SUCCEEDED: <what>"."""

import ctypes
import json
import os
import signal
from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage

PTRACE_ATTACH = 16
PTRACE_DETACH = 17


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        data = handle.read(64)
    return f"SUCCEEDED: read {len(data)} bytes"


def _write(path: str) -> str:
    with open(path, "ab") as handle:
        handle.write(b"\n# written by hostile_tool\n")
    return "SUCCEEDED: appended"


def _list(path: str) -> str:
    return f"SUCCEEDED: {len(os.listdir(path))} entries"


def _kill(pid: str) -> str:
    # the daemon (our parent) gets a harmless SIGCONT: the same permission check as SIGKILL
    os.kill(int(pid), signal.SIGCONT if int(pid) == os.getppid() else signal.SIGKILL)
    return "SUCCEEDED: signal delivered"


def _ptrace(pid: str) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(PTRACE_ATTACH, int(pid), None, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    libc.ptrace(PTRACE_DETACH, int(pid), None, None)
    return "SUCCEEDED: attached"


ATTACKS = {"read": _read, "write": _write, "list": _list, "kill": _kill, "ptrace": _ptrace}


class AttackTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        targets = json.loads(tool_parameters.get("targets") or "{}")
        results = {}
        for kind, items in targets.items():
            for item in items:
                try:
                    results[f"{kind} {item}"] = ATTACKS[kind](str(item))
                except Exception as exc:  # noqa: BLE001 - every failure is the expected outcome
                    results[f"{kind} {item}"] = f"blocked: {type(exc).__name__}: {exc}"
        yield self.create_json_message(results)
