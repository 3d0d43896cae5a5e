"""Coaching scorecards at scale: a month of AGENTS x CALLS scored calls on PostgreSQL, then the time to compute
that month's scoreboard for every agent (`GET /v1/agents`) and one agent's card (`GET /v1/agents/{id}`: the
figures, six periods of trend each against the team, per-topic figures, moments and the coaching list).

The rows are the real per-call rows (service/coaching/repository.py) of calls scored by the real pipeline from text
turns (a handful of call shapes, spread over agents and the month at random), bulk-loaded with COPY into a fresh
schema of the server at --url (default $HUIFANG_TEST_POSTGRES_URL; `bash .ci/postgres.sh` starts one), which is
dropped afterwards unless --keep.

    python -m bench.coaching                          # 500 agents x 2,000 calls (1M rows)
    python -m bench.coaching --agents 20 --calls 50   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bench._common import emit

# Call shapes: (role, turns). Texts written for the benchmark; each is scored by the real pipeline once.
SHAPES: list[tuple[str, list[tuple[str, str, str, float, float]]]] = [
    ("guarantor", [("a1", "agent", "请问您的贷款金额是多少？", 0, 4), ("c1", "customer", "八十万吧。", 5, 6),
                   ("a2", "agent", "每月几号还款？", 8, 10), ("c2", "customer", "这个问它干嘛，不方便说。", 11, 13),
                   ("a3", "agent", "每月月供多少钱？", 15, 17), ("c3", "customer", "大概五千多吧，记不清了。", 20, 22),
                   ("a4", "agent", "每月月供具体是多少？", 23, 25), ("c4", "customer", "五千二。", 26, 27)]),
    ("borrower", [("a1", "agent", "请问您的贷款金额是多少？", 0, 3), ("c1", "customer", "九十万。", 3.5, 4.5),
                  ("a2", "agent", "每月几号还款？", 5, 7), ("c2", "customer", "每月十二号。", 9, 10),
                  ("a3", "agent", "贷款期限是几年？", 11, 13), ("c3", "customer", "二十年。", 13.5, 14.5),
                  ("a4", "agent", "房子现在是自住还是出租？", 15, 18), ("c4", "customer", "自己住。", 19, 20)]),
    ("borrower", [("a1", "agent", "您最近收入情况怎么样？", 0, 3), ("c1", "customer", "还行吧，说不好。", 12, 14),
                  ("a2", "agent", "最近还款有没有困难？", 15, 18), ("c2", "customer", "这个不方便说。", 19, 20),
                  ("a3", "agent", "每月月供多少钱？", 21, 23), ("c3", "customer", "六千。", 24, 25)]),
    ("coborrower", [("a1", "agent", "这笔贷款您作为共同还款人知道吗？", 0, 4),
                    ("c1", "customer", "不太清楚，我不知道这个。", 5, 7),
                    ("a2", "agent", "每月几号还款？", 8, 10), ("c2", "customer", "好像是十五号吧。", 11, 12)]),
]
LOAN = {"amount_yuan": 900_000, "term_years": 20, "repay_day": 12, "monthly_yuan": 5200, "rate_pct": 3.7}
COLUMNS = ("call_id", "agent_id", "at", "duration_s", "coverage", "topics_asked", "topics_total", "high_skipped",
           "prompts_shown", "prompts_followed", "prompts_clarified", "vague_unresolved", "mismatches_standing",
           "agent_talk_s", "customer_talk_s", "questions", "question_silence_s", "detail")


def templates() -> list[dict[str, Any]]:
    """The stored row of each call shape, as COPY values (the real pipeline and the real row builder)."""
    from nlu.assess import Assessor
    from nlu.dialogue import Turn
    from nlu.report import score_call
    from nlu.script import load_script
    from nlu.types import LoanRecord
    from service.bootstrap import sensitivities
    from service.coaching.repository import row_of, stats_of
    from service.store.models import Call

    assessor, out, sensitivity = Assessor(), [], sensitivities(load_script())
    for i, (role, turns) in enumerate(SHAPES):
        report = score_call(f"t{i}", [Turn(*t) for t in turns], assessor,  # type: ignore[arg-type]
                            LoanRecord.from_mapping({**LOAN, "role": role}), 30.0 + 10 * i).to_dict()
        call = Call(call_id=f"t{i}", agent_id="A", created_at=datetime(2026, 11, 1), report=report)
        row = row_of(stats_of(call, sensitivity))
        out.append({name: getattr(row, name) for name in COLUMNS})
    return out


def load(url: str, agents: int, calls: int, month: date, tz: ZoneInfo, seed: int = 7) -> float:
    """COPY agents x calls rows (calls, then their coaching rows) spread over the month; returns seconds."""
    from sqlalchemy import create_engine

    shapes = templates()
    rng = random.Random(seed)
    start = datetime.combine(month, datetime.min.time(), tzinfo=tz).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    month_s = (((month + timedelta(days=32)).replace(day=1)) - month).days * 86400
    details = [json.dumps(s["detail"], ensure_ascii=False, separators=(",", ":")) for s in shapes]
    began = time.perf_counter()
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        with conn.cursor() as cur:
            for a in range(agents):
                agent = f"A{a:04d}"
                rows = []
                for c in range(calls):
                    k = rng.randrange(len(shapes))
                    at = start + timedelta(seconds=rng.randrange(month_s))
                    rows.append((f"{agent}-{c:05d}", agent, at, k))
                with cur.copy("COPY calls (call_id, agent_id, created_at, duration_s, risk_score, tier, report) "
                              "FROM STDIN") as copy:
                    for call_id, agent_id, at, k in rows:
                        copy.write_row((call_id, agent_id, at, shapes[k]["duration_s"], 0, "low", "{}"))
                with cur.copy(f"COPY agent_call_stats ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for call_id, agent_id, at, k in rows:
                        s = shapes[k]
                        copy.write_row((call_id, agent_id, at, *[s[n] for n in COLUMNS[3:-1]], details[k]))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("ANALYZE calls")
            cur.execute("ANALYZE agent_call_stats")
        conn.commit()
    finally:
        raw.close()
        engine.dispose()
    return time.perf_counter() - began


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    runs, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        runs.append(round(time.perf_counter() - began, 3))
    return runs, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("HUIFANG_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default $HUIFANG_TEST_POSTGRES_URL)")
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--calls", type=int, default=2000, help="calls per agent in the month")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each query")
    parser.add_argument("--keep", action="store_true", help="keep the schema (its name is printed)")
    args = parser.parse_args()
    if not args.url or not args.url.startswith("postgresql"):
        sys.exit("needs a PostgreSQL URL: --url or HUIFANG_TEST_POSTGRES_URL (bash .ci/postgres.sh prints one)")

    from sqlalchemy import create_engine, text

    from service.coaching.cards import agent_card, scoreboard, window
    from service.coaching.figures import load_rules
    from service.store import Store

    tz, month = ZoneInfo("Asia/Shanghai"), date(2026, 11, 1)
    schema = f"bench_coaching_{secrets.token_hex(4)}"
    admin = create_engine(args.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{args.url}{'&' if '?' in args.url else '?'}options=-csearch_path%3D{schema}"
    store = Store(url)
    try:
        store.migrate()
        load_s = load(url, args.agents, args.calls, month, tz)
        rows = args.agents * args.calls
        emit({"bench": "coaching", "stage": "load", "agents": args.agents, "calls_per_agent": args.calls,
              "rows": rows, "s": round(load_s, 1), "rows_per_s": round(rows / load_s)})
        w = window("month", month, tz)
        runs, board = timed(lambda: scoreboard(store, w, "coverage", True), args.repeat)
        assert len(board["agents"]) == args.agents and sum(a["figures"]["calls"] for a in board["agents"]) == rows
        emit({"bench": "coaching", "stage": "month_all_agents", "agents": args.agents, "rows": rows,
              "s_median": statistics.median(runs), "s_runs": runs})
        rules = load_rules()
        runs, card = timed(lambda: agent_card(store, "A0000", w, rules), args.repeat)
        assert card["figures"]["calls"] == args.calls and len(card["review"]) == rules.review_calls
        emit({"bench": "coaching", "stage": "month_one_agent_card", "agents": args.agents, "rows": rows,
              "agent_calls": args.calls, "trend_periods": len(card["trend"]), "s_median": statistics.median(runs),
              "s_runs": runs})
        with store.engine.connect() as conn:
            size = conn.execute(text("SELECT pg_total_relation_size('agent_call_stats')")).scalar_one()
        emit({"bench": "coaching", "stage": "table_size", "rows": rows, "mb": round(size / 2**20),
              "bytes_per_row": round(size / max(rows, 1))})
    finally:
        store.close()
        if args.keep:
            print(f"kept schema {schema}", file=sys.stderr)
        else:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
