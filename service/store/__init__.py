"""Storage of recording jobs, scored calls and their answers (SQLAlchemy 2; SQLite or PostgreSQL)."""

from service.store.store import CallFilter, JobRecord, Store, StoreError

__all__ = ["CallFilter", "JobRecord", "Store", "StoreError", "audit"]

from service.store import audit  # noqa: E402  (after Store, which it uses)
