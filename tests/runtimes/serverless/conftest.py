"""Fixtures of the serverless runtime tests: one connector and one daemon per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dify_inner_api import DifyInnerAPI


@pytest.fixture(scope="module")
def inner_api() -> Iterator[DifyInnerAPI]:
    with DifyInnerAPI(key="inner-key") as api:
        yield api


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serverless-home")
