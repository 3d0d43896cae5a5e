"""Empty PostgreSQL databases for tests and benchmarks: a fresh schema of the server they are given, dropped
afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def fresh_schema(url: str, prefix: str = "bench") -> Iterator[str]:
    """A URL of the PostgreSQL database `url` whose tables live in a new schema of their own, dropped afterwards
    (nothing else in that database is touched): benchmarks and tests that need an empty database."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def fresh_postgres_schema() -> Iterator[str]:
    """A URL of the test PostgreSQL server whose tables live in a fresh schema, dropped afterwards (for tests
    that need an empty database). Skips without a server, fails where one is required (.ci/run)."""
    url = os.environ.get("HUIFANG_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("HUIFANG_REQUIRE_POSTGRES") == "1":
            raise AssertionError("HUIFANG_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
        pytest.skip("no PostgreSQL server: set HUIFANG_TEST_POSTGRES_URL (bash .ci/postgres.sh prints one)")
    with fresh_schema(url, "t") as schema_url:
        yield schema_url
