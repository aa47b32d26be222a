"""Column types that store values as the Go daemon's GORM models do, on every database.

- :class:`GoUUID`: ``uuid`` on PostgreSQL, ``char(36)`` on MySQL (the Go daemon's MySQL dialect),
  text elsewhere; always a canonical lowercase string in Python.
- :class:`GoJSON`: a JSON document in a text column (GORM's ``serializer:json``): ``text`` on
  PostgreSQL, ``longtext`` on MySQL; compact, as Go's encoder writes it; SQL NULL for None.
- :class:`GoDateTime`: ``timestamptz`` on PostgreSQL, ``datetime(3)`` on MySQL.
- :func:`go_text`: ``text``, and ``longtext`` on MySQL.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CHAR, DateTime, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

#: no generator makes it (v7 ids carry a timestamp): what a value that is not a UUID is compared as
_NEVER = "ffffffff-ffff-ffff-ffff-ffffffffffff"

_MYSQL = ("mysql", "mariadb")


def new_id() -> str:
    """A UUID v7 (time-ordered), as the Go daemon gives every row."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class GoUUID(TypeDecorator[str]):
    """A uuid column. On PostgreSQL a string that is not a UUID cannot be bound; it is compared
    as a UUID no row has, so looking up a malformed id finds nothing instead of failing."""

    impl = String(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.UUID(as_uuid=False)
        if dialect.name in _MYSQL:
            return CHAR(36)
        return String(36)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql" and not is_uuid(value):
            return _NEVER
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else str(value)


class GoJSON(TypeDecorator[Any]):
    """A value serialized to JSON text, as GORM's json serializer stores it."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return _long_text(dialect)

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or value == "":
            return None
        return json.loads(value)


class GoDateTime(TypeDecorator[datetime]):
    """A point in time, always read back as an aware UTC datetime. MySQL's ``datetime(3)`` keeps
    no zone: UTC is written there, as the Go daemon's driver does."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            from sqlalchemy.dialects import mysql

            return mysql.DATETIME(fsp=3)
        return DateTime(timezone=True)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None and dialect.name != "postgresql":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class GoText(TypeDecorator[str]):
    """Text of any length: ``longtext`` on MySQL, as GORM makes a Go string without a size."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return _long_text(dialect)


def _long_text(dialect: Dialect) -> TypeEngine[Any]:
    # the MySQL and PostgreSQL dialects are imported only where they are used: on the embedded
    # SQLite default they would cost the daemon's idle memory for nothing
    if dialect.name in _MYSQL:
        from sqlalchemy.dialects import mysql

        return mysql.LONGTEXT()
    return Text()


def go_text() -> TypeEngine[Any]:
    return GoText()
