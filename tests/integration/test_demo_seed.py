"""`huifang demo-seed` with the real model (issue #18 point 5, issue #27 point 6): the bundled demo calls transcribed
once and scored under the seed's loan files fill an empty database with customers whose pages have content, three
agents whose scorecards differ, second calls closed by the calls that made them, and a book planned as of today; a
second run with --if-empty adds nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service import bootstrap
from service.cli import main
from service.store.models import Call, CustomerTier, FollowUp, OutboxMessage


@pytest.mark.model
def test_demo_seed_fills_an_empty_database_once(model_cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli.demo_seed import DEMO_AGENT, SEED
    from service.coaching import cards as coaching
    from service.settings import Settings, get_settings

    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(model_cache)
    monkeypatch.setenv("HUIFANG_DATA_DIR", str(data))
    get_settings.cache_clear()
    try:
        assert main(["demo-seed"]) == 0
        assert "9 calls of 5 demo customers by 3 agents stored and planned as of today" in capsys.readouterr().out
        assert main(["demo-seed", "--if-empty"]) == 0
        assert main(["demo-seed"]) == 2  # never into a database that has calls
    finally:
        get_settings.cache_clear()
    settings = Settings(data_dir=data)
    store = bootstrap.open_store(settings)
    with store.session() as s:
        calls = list(s.scalars(select(Call).order_by(Call.created_at)))
        assert len(calls) == len(SEED) and all(c.call_id.startswith("DEMO-") for c in calls)
        assert {c.customer_id for c in calls} == {f"DEMO-C00{n}" for n in range(1, 6)}
        # No id with a long digit run: ids that look like phone or card numbers are refused (issue #27).
        assert not any(re.search(r"\d{4}", c.call_id) for c in calls)
        assert {c.agent_id for c in calls} == {"DEMO-A01", "DEMO-A02", "DEMO-A03"}
        assert all(c.audio_dir for c in calls)  # the report page can play them
        assert s.scalar(select(func.count()).select_from(CustomerTier)) >= 4
        followups = list(s.scalars(select(FollowUp)))
        assert any(f.assignee == DEMO_AGENT and f.status == "assigned" for f in followups)
        assert any(f.status == "unreachable" for f in followups)
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) >= 1
        # A second call that was made is not left open (and overdue) behind the call that made it.
        for f in followups:
            later = [c for c in calls if c.customer_id == f.customer_id and c.created_at > f.created_at]
            assert not (f.channel == "call" and f.status in ("open", "assigned") and later), (f.id, f.due_date)
        assert any(f.channel == "call" and f.status == "done" for f in followups)
    book = bootstrap.build_loanbook(settings, store, bootstrap.load_assessor(settings, with_classifier=False))
    assert book.plan_due() == 0  # the seed planned every customer as of today: the service has none left
    first = book.customer("DEMO-C001")
    assert first is not None and len(first["calls"]) == 3 and first["never_clear"]
    assert [t["tier"] for t in first["tiers"]][0] == "medium"  # the first call, 40 days ago, left it medium
    assert first["contact"]["phone"] == "138****0001"
    # The coaching pages' default period compares three agents whose figures differ.
    board = coaching.scoreboard(store, coaching.window("month", book.today(), book.tz))
    cards = {a["agent_id"]: a["figures"] for a in board["agents"]}
    assert set(cards) == {"DEMO-A01", "DEMO-A02", "DEMO-A03"}
    assert len({json.dumps(card, sort_keys=True) for card in cards.values()}) == 3
    store.close()
