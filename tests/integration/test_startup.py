"""Start-up when several replicas share one database (issue #17 point 2): migrations take turns, there is one
Alembic head, and a replica whose database is not ready yet keeps trying and reports not-ready until it is."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.app import create_app, state_of
from service.settings import Settings
from tests.integration.test_live_socket import FakeTranscriber

REPO = Path(__file__).resolve().parents[2]


def test_the_migrations_have_one_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from service.store.store import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_the_migrations_build_the_tables_the_models_declare(tmp_path: Path) -> None:
    """Models and migrations are written by hand; a column added to one and not the other must fail here, not
    on a bank's database."""
    _compare_models(f"sqlite:///{tmp_path / 'huifang.db'}")


def test_the_migrations_build_the_tables_the_models_declare_on_postgresql(postgres_schema: str) -> None:
    _compare_models(postgres_schema)


def _compare_models(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.store import Store
    from service.store.models import Base

    store = Store(url)
    store.migrate()
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    store.close()


def test_a_replica_waits_for_its_database_and_reports_not_ready_until_then(tmp_path: Path) -> None:
    later = tmp_path / "not-yet"  # SQLite cannot create a file in a folder that does not exist yet
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{later / 'huifang.db'}")
    app = create_app(settings, transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200  # alive: live calls work without a database
        waiting = client.get("/readyz")
        assert waiting.status_code == 503 and waiting.json()["error"] == "the database is not available"
        later.mkdir()  # the database comes up
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, state_of(app).store_error  # type: ignore[arg-type]
            time.sleep(0.2)
        state = state_of(app)  # type: ignore[arg-type]
        assert state.store is not None and state.jobs is not None and state.calls.store is state.store


_MIGRATE = """
import sys, time
from service.store import Store
store = Store(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # imports done: all start migrating at one instant
store.migrate()
"""


def test_replicas_starting_together_on_one_postgresql_take_turns_migrating(postgres_schema: str) -> None:
    """Four processes migrate one empty schema at once: every one succeeds (without the advisory lock the
    losers failed on duplicate tables and stayed 'storage unavailable')."""
    from sqlalchemy import create_engine, text

    at = str(time.time() + 8)
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE, postgres_schema, at], cwd=REPO,
                              stderr=subprocess.PIPE) for _ in range(4)]
    outcomes = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in outcomes), [err[-500:] for code, err in outcomes if code]
    engine = create_engine(postgres_schema)
    with engine.begin() as conn:
        tables = conn.execute(text("SELECT count(*) FROM information_schema.tables "
                                   "WHERE table_schema = current_schema()")).scalar_one()
        heads = conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one()
    engine.dispose()
    assert tables >= 5 and heads == 1
