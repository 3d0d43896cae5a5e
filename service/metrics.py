"""Prometheus metrics of one huifang process, served on their own port (`huifang serve`: 127.0.0.1:9464 by
default, `HUIFANG_METRICS__HOST/PORT`), never on the API's.

Counters and histograms are updated where things happen (decode scheduler, live calls, assistance, jobs,
errors); gauges that are a count of something the process holds (live calls, decode backlog, queued jobs) are
read at scrape time from the application state, except the floor's open alerts, kept as they are raised and
acknowledged. No label carries a call id, an agent id or any text: the label
values are small fixed sets (search mode, verdict label, outcome, error code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from asr.cpu import Ledger, thread_cpu_s

#: The process's metrics (one registry, so that tests and the metrics port see the same series).
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # resident memory, CPU, open files

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

DECODE_WAIT = Histogram("huifang_decode_wait_seconds", "Time a final waited for a decode worker", registry=REGISTRY,
                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0))
FINALS = Counter("huifang_finals_decoded_total", "Finals (and pieces of finals) decoded, by search",
                 ["search"], registry=REGISTRY)
FINAL_LATENCY = Histogram("huifang_final_latency_seconds", "From the end of an utterance being detected to its "
                          "final being sent", registry=REGISTRY, buckets=_LATENCY_BUCKETS)
ASSESSMENTS = Counter("huifang_assessments_total", "Live answer verdicts, by label", ["label"], registry=REGISTRY)
PROMPTS = Counter("huifang_prompts_total", "Follow-up prompts sent to agents, by topic and the assessor's label",
                  ["topic", "label"], registry=REGISTRY)
PROMPT_FEEDBACK = Counter("huifang_prompt_feedback_total", "Agents' verdicts on prompts (asked_again, disputed), by "
                          "topic, the assessor's label and the dispute's reason (- for none)",
                          ["topic", "label", "verdict", "reason"], registry=REGISTRY)
PROMPT_REVIEWS = Counter("huifang_prompt_reviews_total", "Disputed prompts reviewed (upheld, overturned), by topic "
                         "and the assessor's label", ["topic", "label", "decision"], registry=REGISTRY)
REDECODED = Counter("huifang_redecoded_utterances_total", "Live finals decoded greedily under load and decoded "
                    "again at full quality after their call", registry=REGISTRY)
REDECODE_SKIPPED = Counter("huifang_redecode_skipped_total", "Live calls whose degraded finals were not re-decoded "
                           "(the re-decode queue was full, or no audio was kept): their live verdicts stand",
                           registry=REGISTRY)
LIVE_FINAL_LABELS = Counter("huifang_live_final_labels_total", "Topics of re-decoded live calls, by whether the "
                            "verdict after the call agrees with the one the agent got live", ["agreed"],
                            registry=REGISTRY)
JOBS = Counter("huifang_jobs_total", "Recording jobs finished, by outcome", ["outcome"], registry=REGISTRY)
JOB_DURATION = Histogram("huifang_job_duration_seconds", "Time to score a recording", registry=REGISTRY,
                         buckets=(5, 15, 30, 60, 120, 300, 600, 1800))
BUS_DELAY = Histogram("huifang_bus_delay_seconds", "From a call publishing an event to a screen's replica reading it "
                      "from Redis (wall clocks)", registry=REGISTRY,
                      buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
BUS_ERRORS = Counter("huifang_bus_errors_total", "Event bus and call claim failures (Redis), by side", ["side"],
                     registry=REGISTRY)
OUTBOX = Counter("huifang_outbox_messages_total", "Outbox delivery attempts by channel and the status they left "
                 "the message in (sent, failed: tried again later, dead, suppressed)", ["channel", "status"],
                 registry=REGISTRY)
#: The call audio the live path's CPU (asr.cpu.LEDGER) was spent on.
LIVE_AUDIO = Counter("huifang_live_audio_seconds_total", "Seconds of live call audio received (per call, not per "
                     "channel)", registry=REGISTRY)
LIVE_ADMISSIONS = Counter("huifang_live_admissions_total", "Live calls admitted at the websocket upgrade, by outcome: "
                          "decoded here, redirected (503: this replica was full and another had room) or "
                          "record_only (no replica had room: scored after the call)", ["outcome"], registry=REGISTRY)
FLOOR_ALERTS = Counter("huifang_floor_alerts_total", "Alerts raised on the supervisors' live floor, by rule "
                       "(configs/alerts.yaml), counted by the replica streaming the call", ["rule"], registry=REGISTRY)
FLOOR_ALERTS_OPEN = Gauge("huifang_floor_alerts_open", "Alerts not yet acknowledged on the calls this replica "
                          "streams, by rule (summed over replicas: the floor's)", ["rule"], registry=REGISTRY)
NOTES = Counter("huifang_supervisor_notes_total", "Supervisors' notes sent to agents during live calls",
                registry=REGISTRY)
LISTEN_IN = Counter("huifang_listen_in_total", "Times a supervisor started listening in on a live call",
                    registry=REGISTRY)
LISTEN_SKIPPED = Counter("huifang_listen_in_skipped_seconds_total", "Seconds of audio skipped for listeners that "
                         "fell behind (they jump to the live edge)", registry=REGISTRY)
ERRORS = Counter("huifang_errors_total", "Refusals and failures reported to clients, by code", ["code"],
                 registry=REGISTRY)


class StateCollector(Collector):
    """Gauges read from the running application at scrape time."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        values = self._read()
        calls = GaugeMetricFamily("huifang_live_calls", "Live calls streaming now, by mode: decoded live, or "
                                  "record_only (beyond capacity: scored after the call)", labels=["mode"])
        for mode in ("decoded", "record_only"):
            if f"huifang_live_calls:{mode}" in values:
                calls.add_metric([mode], values[f"huifang_live_calls:{mode}"])
        if calls.samples:
            yield calls
        for name, help_text in (("huifang_live_capacity", "Live calls this process decodes at once "
                                 "(live.capacity; absent: no limit)"),
                                ("huifang_decode_queue_depth", "Decodes waiting for a worker"),
                                ("huifang_dropped_partials_total", "Partials skipped because decoding was busy"),
                                ("huifang_jobs_queued", "Jobs waiting (recordings to score, live calls to re-decode)"),
                                ("huifang_redecode_queued", "Live calls waiting for their degraded finals to be "
                                 "re-decoded"),
                                ("huifang_draining", "1 while the process is stopping")):
            if name in values:
                yield GaugeMetricFamily(name, help_text, value=values[name])


class CpuCollector(Collector):
    """Where the live path's CPU goes (`LEDGER`), and the event loop thread's own CPU, read at scrape time."""

    def __init__(self, ledger: Ledger, loop_thread: int) -> None:
        self._ledger = ledger
        self._loop_thread = loop_thread

    def collect(self) -> Iterable[Metric]:
        work = CounterMetricFamily("huifang_live_cpu_seconds", "CPU seconds of live recognition, by work (final, "
                                   "partial_shown, partial_wasted, prefetch_used, prefetch_wasted, listen, text, "
                                   "assess, keep; recording: decodes outside live calls; idle: decoding threads "
                                   "between decodes) and phase", labels=["work", "phase"])
        for (name, phase), seconds in sorted(self._ledger.snapshot().items()):
            work.add_metric([name, phase], seconds)
        yield work
        yield CounterMetricFamily("huifang_event_loop_cpu_seconds", "CPU seconds of the event loop's thread",
                                  value=thread_cpu_s(self._loop_thread))


def scrape() -> bytes:
    """The metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)
