"""`huifang demo-seed` with the real model (issue #18 point 5): the bundled demo calls transcribed once and scored
under the seed's loan files fill an empty database with customers whose pages have content; a second run with
--if-empty adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.cli import main
from service.store.models import Call, CustomerTier, FollowUp, OutboxMessage


@pytest.mark.model
def test_demo_seed_fills_an_empty_database_once(model_cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from service.archive import open_store
    from service.cli.demo_seed import DEMO_AGENT, SEED
    from service.loanbook import build_loanbook
    from service.settings import Settings, get_settings

    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(model_cache)
    monkeypatch.setenv("HUIFANG_DATA_DIR", str(data))
    get_settings.cache_clear()
    try:
        assert main(["demo-seed"]) == 0
        assert "8 calls of 4 demo customers" in capsys.readouterr().out
        assert main(["demo-seed", "--if-empty"]) == 0
        assert main(["demo-seed"]) == 2  # never into a database that has calls
    finally:
        get_settings.cache_clear()
    settings = Settings(data_dir=data)
    store = open_store(settings)
    with store.session() as s:
        calls = list(s.scalars(select(Call).order_by(Call.created_at)))
        assert len(calls) == len(SEED) and all(c.call_id.startswith("DEMO-") for c in calls)
        assert {c.customer_id for c in calls} == {"DEMO-C001", "DEMO-C002", "DEMO-C003", "DEMO-C004"}
        assert all(c.audio_dir for c in calls)  # the report page can play them
        assert s.scalar(select(func.count()).select_from(CustomerTier)) >= 4
        followups = list(s.scalars(select(FollowUp)))
        assert any(f.assignee == DEMO_AGENT and f.status == "assigned" for f in followups)
        assert any(f.status == "unreachable" for f in followups)
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) >= 1
    book = build_loanbook(settings, store, settings.assessor(with_classifier=False))
    first = book.customer("DEMO-C001")
    assert first is not None and len(first["calls"]) == 3 and first["never_clear"]
    assert [t["tier"] for t in first["tiers"]][0] == "medium"  # the first call, 40 days ago, left it medium
    assert first["contact"]["phone"] == "138****0001"
    store.close()
