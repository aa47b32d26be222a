"""Fixtures every runtime's tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dify_inner_api import DifyInnerAPI


@pytest.fixture(scope="module")
def inner_api() -> Iterator[DifyInnerAPI]:
    """A stand-in of Dify's inner API (key ``inner-key``) for one test module."""
    with DifyInnerAPI(key="inner-key") as api:
        yield api
