"""Fixtures of the serverless runtime tests: one connector and one daemon per module."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serverless-home")
