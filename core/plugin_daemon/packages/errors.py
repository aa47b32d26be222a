"""The one exception this package raises."""

from __future__ import annotations


class PackageError(Exception):
    """A package is unreadable, unsafe or invalid; ``message`` says what is wrong, in one sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
