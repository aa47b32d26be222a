"""gitignore-style patterns, for .difyignore."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    negated: bool
    folders_only: bool


def parse_ignore_file(text: str) -> list[IgnoreRule]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated or line.startswith(("\\#", "\\!")):
            line = line[1:]
        folders_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        body = _translate(line.lstrip("/"))
        rules.append(IgnoreRule(re.compile(body if anchored else f"(?:.*/)?{body}"), negated, folders_only))
    return rules


def is_ignored(rules: list[IgnoreRule], path: str, is_folder: bool) -> bool:
    """Whether ``path`` (relative, '/'-separated) is ignored: the last rule that matches decides."""
    ignored = False
    for rule in rules:
        if rule.folders_only and not is_folder:
            continue
        if rule.pattern.fullmatch(path):
            ignored = not rule.negated
    return ignored


def _translate(glob: str) -> str:
    out, index = [], 0
    while index < len(glob):
        if glob.startswith("**/", index) and (index == 0 or glob[index - 1] == "/"):
            out.append("(?:.*/)?")
            index += 3
            continue
        if glob.startswith("**", index) and index + 2 == len(glob) and (index == 0 or glob[index - 1] == "/"):
            out.append(".*")
            break
        char = glob[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and index + 1 < len(glob):
            index += 1
            out.append(re.escape(glob[index]))
        elif char == "[" and (end := glob.find("]", index + 2)) > 0:
            body = glob[index + 1 : end]
            negate = body[:1] in ("!", "^")
            body = "".join(c if c == "-" else re.escape(c) for c in (body[1:] if negate else body))
            out.append(f"[{'^/' if negate else ''}{body}]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)
