"""`huifang score-archive SOURCE`: the calls of an archive (a manifest CSV or a folder of recordings) into the
job queue, then scored until the archive's jobs are done: by worker threads of this process, by a pool of Ray
actors (`--ray`), or, with `--enqueue-only`, left to the service's replicas. Running it again resumes: calls
already scored or queued are not queued again (see `service.workers.archive`).

Progress goes to stderr every `--interval` seconds; the summary to stdout. Exit status 0 when every job of the
archive was scored, 1 when some failed (each listed with its error), 2 for a manifest that cannot be used.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from service import bootstrap
from service.errors import ServiceError
from service.settings import Settings
from service.store import StoreError
from service.workers.archive import (
    BatchProgress,
    ThreadWorkers,
    Workers,
    enqueue,
    read_archive,
    score_until_drained,
)

#: Unusable manifest rows listed one by one; the rest are counted.
SHOWN_PROBLEMS = 50


def _say(text: str) -> None:
    print(f"huifang: {text}", file=sys.stderr, flush=True)


def _every(interval_s: float, report: Callable[[int], None]) -> Callable[[int], None]:
    """`report`, called at most once per `interval_s` (queueing a million calls takes a while)."""
    next_at = [time.monotonic() + interval_s]

    def maybe(count: int) -> None:
        if time.monotonic() >= next_at[0]:
            next_at[0] = time.monotonic() + interval_s
            report(count)

    return maybe


def score_archive(settings: Settings, source: Path, channels: tuple[str, ...], ray_address: str | None,
                  actors: int | None, cpus_per_actor: int, workers: int, enqueue_only: bool, skip_invalid: bool,
                  interval_s: float) -> int:
    """Body of `huifang score-archive`."""
    archive = read_archive(source)
    for problem in archive.problems[:SHOWN_PROBLEMS]:
        print(f"{source}: {problem}", file=sys.stderr)
    if len(archive.problems) > SHOWN_PROBLEMS:
        print(f"{source}: ... and {len(archive.problems) - SHOWN_PROBLEMS} more", file=sys.stderr)
    if archive.problems and not skip_invalid:
        raise ServiceError("usage", f"{len(archive.problems)} of {len(archive.problems) + len(archive.calls)} "
                           "calls of the archive cannot be queued (listed above): correct them, or pass "
                           f"--skip-invalid to queue the other {len(archive.calls)}")
    if not archive.calls:
        raise ServiceError("usage", f"{source}: no call of the archive can be queued")
    if ray_address is not None:
        from service.workers.ray_pool import LOCAL, import_ray

        import_ray()  # a missing extra is said before anything is queued
        if ray_address != LOCAL and settings.db_url.startswith("sqlite"):
            _say("warning: a Ray cluster on the embedded SQLite database works only on this one machine; set "
                 "HUIFANG_DATABASE_URL to a PostgreSQL server every node reaches")
    try:
        store = bootstrap.open_store(settings)
    except StoreError as e:
        raise ServiceError("usage", str(e)) from e
    try:
        done = enqueue(store, archive, channels, _every(interval_s, lambda n: _say(
            f"queueing: {n}/{len(archive.calls)} calls looked at")))
        _say(f"{source}: {len(archive.calls)} calls (jobs {archive.batch}*): {done.queued} queued now, "
             f"{done.scored_before} scored before, {done.pending_before} already queued or running")
        if enqueue_only:
            _say("left in the queue for `huifang serve` replicas (or `huifang score-archive --ray`)")
            return 0
        if BatchProgress.read(store, archive.batch).pending:
            pool: Workers
            if ray_address is not None:
                from service.workers.ray_pool import RayWorkers

                pool = RayWorkers(settings, store, ray_address, actors, cpus_per_actor, settings.scoring.lease_s)
            else:
                pool = ThreadWorkers(bootstrap.job_context(settings, store, bootstrap.load_scorer(settings)), workers,
                                     settings.scoring.lease_s)
            interrupted = False
            try:
                score_until_drained(store, archive.batch, pool, interval_s, _say)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                handed = pool.close()  # jobs still being scored go back to the queue; Ray's runtime stops
            if interrupted:
                _say(f"interrupted: {handed} job(s) handed back to the queue; run the same command to resume")
                return 130
        final = BatchProgress.read(store, archive.batch)
        for job in store.batch_failures(archive.batch):
            print(f"{job.call_id}: {job.error}", file=sys.stderr)
        print(f"{final.done} scored, {final.failed} failed, {final.pending} left (jobs {archive.batch}*)")
        return 1 if final.failed else 0
    finally:
        store.close()
