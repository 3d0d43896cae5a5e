"""A pool of Ray actors that drain the job queue (`huifang score-archive --ray [ADDRESS]`).

Each actor loads the scorer once (Whisper, the sentence encoder, the answer classifier) and then drains the
database queue exactly as a thread of `huifang score-archive` does (`service.workers.archive.drain_queue`): claim a job
with a lease, score it under a heartbeat, record the fenced outcome. So actors, the service's replicas and any
other consumer share the queue without scoring a job twice, and an actor that dies only delays its job until the
lease runs out.

Ray is an optional dependency (`pip install 'huifang[ray]'`), imported only here and only when a pool is made.
Every node must reach the database (PostgreSQL for more than one machine) and see the data directory and the
archive at the same paths; the settings are the driver's, handed to every actor.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from service.bootstrap import worker_context
from service.errors import ServiceError
from service.ids import process_name
from service.logs import install as install_logging
from service.settings import Settings
from service.store import Store
from service.workers.archive import DrainCounts, drain_queue

log = logging.getLogger(__name__)

#: `--ray` without an address: a Ray runtime of its own on this machine, stopped at the end.
LOCAL = "local"
#: Object store of a local runtime: actors pass only counts, so the default (30% of memory) is not needed.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024


def import_ray() -> Any:
    """The `ray` module, or a `ServiceError` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ServiceError("usage", "scoring on Ray needs the ray extra: pip install 'huifang[ray]'") from e
    return ray


class ScoringActor:
    """One Ray actor: its scorer, loaded once, drains the queue whenever asked (made a Ray actor class by
    `RayWorkers`, so that this module imports without Ray)."""

    def __init__(self, settings: Settings, lease_s: float, cpus: int) -> None:
        install_logging(logging.WARNING)
        if settings.asr.cpu_threads == 0:
            # Decode with the CPUs Ray reserved for this actor, not every core of the node.
            settings = settings.model_copy(update={"asr": settings.asr.model_copy(update={"cpu_threads": cpus})})
        self.ctx = worker_context(settings)
        self.lease_s = lease_s
        self.owner = process_name("ray")

    def ready(self) -> str:
        """Its lease owner name, once the scorer is loaded."""
        return self.owner

    def drain(self) -> DrainCounts:
        return drain_queue(self.ctx, self.owner, self.lease_s)


class RayWorkers:
    """`service.workers.archive.Workers` as Ray actors: a local runtime (`address` "local") or a cluster (any address
    `ray.init` takes: "auto", "HOST:PORT", "ray://HOST:10001")."""

    def __init__(self, settings: Settings, store: Store, address: str, actors: int | None, cpus_per_actor: int,
                 lease_s: float) -> None:
        ray = import_ray()
        self._ray = ray
        self.store = store
        self.local = address == LOCAL
        if self.local:
            ray.init(address=LOCAL, num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.size = actors or max(1, cpus // cpus_per_actor)
            if self.size * cpus_per_actor > cpus:
                # Ray would wait for the CPUs forever, with the actors that fit never told to start.
                raise ServiceError("usage", f"{self.size} actor(s) of {cpus_per_actor} CPU(s) need more than the "
                                   f"{cpus} CPUs of the Ray cluster; fewer --actors or --cpus-per-actor")
            actor_class = ray.remote(ScoringActor)
            self._actors = [actor_class.options(num_cpus=cpus_per_actor).remote(settings, lease_s, cpus_per_actor)
                            for _ in range(self.size)]
            # Wait for every scorer to load, so that a broken node or setting shows before any job is claimed.
            try:
                self.owners: list[str] = ray.get([a.ready.remote() for a in self._actors])
            except ray.exceptions.RayError as e:
                cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise ServiceError("usage", f"a Ray actor could not load the scorer: {cause}") from e
        except BaseException:
            self._shutdown()
            raise
        self._running: dict[Any, int] = {}

    def start(self, index: int) -> None:
        self._running[self._actors[index].drain.remote()] = index

    def wait(self, timeout_s: float) -> list[tuple[int, DrainCounts | BaseException, bool]]:
        if not self._running:
            time.sleep(timeout_s)  # nothing running: the supervisor waits for an actor's turn to start again
            return []
        ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=timeout_s)
        if ready:
            ready, _ = self._ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        finished: list[tuple[int, DrainCounts | BaseException, bool]] = []
        for ref in ready:
            index = self._running.pop(ref)
            try:
                finished.append((index, self._ray.get(ref), True))
            except self._ray.exceptions.RayActorError as e:  # the actor (or its node) is gone for good
                finished.append((index, e, False))
            except self._ray.exceptions.RayError as e:  # the drain raised (the database was away): try again
                finished.append((index, e, True))
        return finished

    def close(self) -> int:
        """Stop the actors (a drain in progress is cut short) and hand their jobs back to the queue at once."""
        try:
            for actor in self._actors:
                self._ray.kill(actor)
            return sum(self.store.hand_back(owner) for owner in self.owners)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        # A local runtime is ours: shutting down stops its processes. On a cluster this only disconnects.
        self._ray.shutdown()
