"""The loan book at scale (issue #18): re-planning CUSTOMERS customers with CALLS calls each on PostgreSQL from the
compact per-call summaries (`call_summaries`, never the report JSON), and the outbox's throughput against a local
receiver (bench/outbox.py, with tests/support/receivers.py).

The summaries are the real rows (service/loanbook/repository.py `record_call`) of a few report shapes made by the real
pipeline from text turns (a clear call, a vague one, a contradicted figure, a hedged guarantor), spread over the
customers and the past months at random, bulk-loaded with COPY into a fresh schema of the server at --url (default
$HUIFANG_TEST_POSTGRES_URL; `bash .ci/postgres.sh` starts one), dropped afterwards. Two plannings are timed:
the first (every customer gets a tier and its follow-ups: mostly inserts) and the next day's (the same customers
again: tiers and follow-ups mostly unchanged), each as `huifang plan` runs it (`LoanBook.plan_due`).

    python -m bench.followup                              # 100,000 customers x 5 calls, and the outbox
    python -m bench.followup --customers 2000 --messages 500   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import emit
from service import bootstrap
from tests.support.postgres import fresh_schema


def shapes() -> list[dict[str, Any]]:
    """Reports of a few call shapes, made by the real pipeline from text turns."""
    from nlu.report import load_risk
    from pipeline.call import CallPipeline
    from service.settings import Settings

    settings = Settings()
    assessor = bootstrap.load_assessor(settings, with_classifier=False)
    loan = {"role": "borrower", "amount_yuan": 800000, "term_years": 30, "repay_day": 15, "monthly_yuan": 4200}
    calls = {
        "clear": [("agent", "请问您每月的还款日是哪一天？"), ("customer", "每个月十五号。"),
                  ("agent", "每月月供多少钱？"), ("customer", "四千二。"),
                  ("agent", "最近收入有没有变化，还款有没有困难？"), ("customer", "没有变化，按时还没问题。")],
        "vague": [("agent", "请问您每月的还款日是哪一天？"), ("customer", "记不清了，好像是月中吧。"),
                  ("agent", "最近收入有没有变化，还款有没有困难？"), ("customer", "这个不好说，应该问题不大吧。")],
        "mismatch": [("agent", "每月月供多少钱？"), ("customer", "三千块。"),
                     ("agent", "请问您每月的还款日是哪一天？"), ("customer", "每个月十五号。")],
        "guarantor": [("agent", "您是否同意为这笔贷款提供担保？"), ("customer", "算是同意吧，我也不太清楚。")],
    }
    out = []
    for name, turns in calls.items():
        role = "guarantor" if name == "guarantor" else "borrower"
        pipeline = CallPipeline(name, ("agent", "customer"), assessor, {**loan, "role": role},
                                bootstrap.dialogue_options(settings))
        t = 0.0
        for speaker, text in turns:
            final = pipeline.final(speaker, text, t, t + 2.0)
            if final.turn is not None:
                pipeline.add(final.turn)
            t += 3.0
        pipeline.finish(t)
        report = pipeline.report(t, load_risk())
        out.append({"name": name, "report": report.to_dict(), "typed": report, "role": role})
    return out


def load(url: str, customers: int, calls: int, seed: int = 7) -> float:
    """COPY customers x calls calls (minimal call rows, their real summaries) and the customers; returns seconds."""
    from sqlalchemy import create_engine

    from service.loanbook.policy import call_facts

    kinds = shapes()
    rng = random.Random(seed)
    now = datetime.utcnow()
    began = time.perf_counter()
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        with conn.cursor() as cur:
            for first in range(0, customers, 5000):
                rows = []
                for c in range(first, min(customers, first + 5000)):
                    days = sorted(rng.sample(range(1, 300), calls), reverse=True)
                    for n, ago in enumerate(days):
                        kind = kinds[rng.choices(range(len(kinds)), weights=(5, 3, 1, 1))[0]]
                        at = now - timedelta(days=ago, seconds=rng.randrange(86400))
                        rows.append((f"K{c:06d}-{n}", f"K{c:06d}", f"L{c:06d}", f"A{c % 500:03d}", at, kind))
                with cur.copy("COPY calls (call_id, agent_id, created_at, duration_s, risk_score, tier, report, "
                              "customer_id, loan_id) FROM STDIN") as copy:
                    for call_id, customer, loan, agent, at, kind in rows:
                        r = kind["report"]
                        copy.write_row((call_id, agent, at, r["duration_s"], r["risk_score"], r["tier"], "{}",
                                        customer, loan))
                with cur.copy("COPY call_summaries (call_id, customer_id, loan_id, agent_id, at, risk_score, tier, "
                              "facts) FROM STDIN") as copy:
                    for call_id, customer, loan, agent, at, kind in rows:
                        r = kind["report"]
                        facts = call_facts(call_id, at, kind["typed"]).to_json()
                        facts["loan"] = {"repay_day": 15, "monthly_yuan": 4200, "role": kind["role"]}
                        copy.write_row((call_id, customer, loan, agent, at, r["risk_score"], r["tier"],
                                        json.dumps(facts, ensure_ascii=False)))
                with cur.copy("COPY customers (customer_id, created_at, updated_at) FROM STDIN") as copy:
                    for c in range(first, min(customers, first + 5000)):
                        copy.write_row((f"K{c:06d}", now, now))
        conn.commit()
        with conn.cursor() as cur:
            for table in ("calls", "call_summaries", "customers"):
                cur.execute(f"ANALYZE {table}")
        conn.commit()
    finally:
        raw.close()
        engine.dispose()
    return time.perf_counter() - began


def plan(url: str, customers: int, calls: int, tmp: Path) -> list[dict[str, Any]]:
    """Load, then time the first planning and the next day's."""
    from sqlalchemy import func, select

    from service.settings import Settings
    from service.store import Store
    from service.store.models import FollowUp

    store = Store(url, bootstrap.report_rows(Settings(data_dir=tmp)))
    store.migrate()
    load_s = load(url, customers, calls)
    settings = Settings(data_dir=tmp)
    book = bootstrap.build_loanbook(settings, store, bootstrap.load_assessor(settings, with_classifier=False))
    results = []
    for run, shift in (("first", timedelta(0)), ("next_day", timedelta(days=1))):
        book._clock = lambda shift=shift: datetime.utcnow() + shift  # type: ignore[misc]
        began = time.perf_counter()
        planned = book.plan_due()
        seconds = time.perf_counter() - began
        with store.session() as s:
            followups = s.scalar(select(func.count()).select_from(FollowUp))
        results.append({"bench": "followup_plan", "run": run, "customers": customers, "calls_per_customer": calls,
                        "planned": planned, "seconds": round(seconds, 1),
                        "customers_per_s": round(planned / seconds, 1), "followups": int(followups or 0),
                        "load_s": round(load_s, 1), "db": "postgresql", "cores": os.cpu_count()})
    store.close()
    return results


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000, help="outbox: messages per run (0: skip)")
    parser.add_argument("--url", default=os.environ.get("HUIFANG_TEST_POSTGRES_URL"),
                        help="PostgreSQL (default $HUIFANG_TEST_POSTGRES_URL)")
    args = parser.parse_args(argv)
    if not args.url:
        sys.exit("no PostgreSQL: pass --url or set HUIFANG_TEST_POSTGRES_URL (bash .ci/postgres.sh starts one)")
    with tempfile.TemporaryDirectory(prefix="bench-followup-") as tmp, fresh_schema(args.url, 'bench_followup') as url:
        for result in plan(url, args.customers, args.calls, Path(tmp)):
            emit(result)
    if args.messages:
        from bench.outbox import run

        for result in run(args.messages, db_url=args.url):
            emit(result)


if __name__ == "__main__":
    main()
