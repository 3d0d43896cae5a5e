"""`huifang score FILE` and `huifang score-dir DIR`: post-call scoring from the command line.

`score` prints one call's report and stores nothing. `score-dir` scores every recording of a folder into the
database (the one the service uses), exactly as uploads are scored (`service.workers.jobs`), with a progress bar.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asr.errors import AsrError
from nlu.pii import minimal_loan_file
from nlu.report import Report, read_report
from pipeline.recording import AudioPart, RecordingError, validate_parts
from service import bootstrap
from service.errors import ServiceError
from service.protocol import LoanFileError
from service.settings import Settings
from service.workers import archive
from service.workers.jobs import run_job

LABEL_NAMES = {"clear": "回答清晰", "omission": "信息遗漏", "unclear": "表述不清", "evasive": "避而不答"}
#: The report's tier as the pages show it (configs/risk.yaml: medium from 25, high from 50).
TIER_NAMES = {"low": "低风险", "medium": "中风险", "high": "高风险"}


def read_loan_file(path: Path | None) -> dict[str, Any] | None:
    """A loan file from JSON: the object itself, or an object with a `loan_file` key (the calls' sidecars)."""
    if path is None:
        return None
    try:
        return archive.read_loan_file(path)
    except LoanFileError as e:
        raise ServiceError("usage", f"{path}: {e}") from e


def format_report(report: Report) -> str:
    """The report for a person at a terminal."""
    lines = [f"通话 {report.call_id}  时长 {report.duration_s:.0f} 秒  "
             f"风险评分 {report.risk_score}（{TIER_NAMES.get(report.tier, report.tier)}）"]
    for c in report.contributions:
        lines.append(f"  +{c.points:.0f}  {c.reason}  {c.evidence}")
    lines.append("核对清单:")
    for t in report.topics:
        if not t.asked:
            continue
        label = LABEL_NAMES.get(t.label, "未回答") if t.label else "待回答"
        if t.mismatch:
            label += f"，与档案不符（{t.mismatch.stated:g} / {t.mismatch.on_file:g}）"
        lines.append(f"  {t.name}: {label}  {t.answer_text or ''}")
    not_asked = [t.name for t in report.topics if not t.asked]
    if not_asked:
        lines.append(f"  未询问: {'、'.join(not_asked)}")
    if report.actions:
        lines.append("建议措施:")
        lines += [f"  - {a.text}" for a in report.actions]
    return "\n".join(lines)


def score_file(settings: Settings, path: Path, loan_path: Path | None, channels: tuple[str, ...], call_id: str | None,
               as_json: bool, progress: bool) -> int:
    """Body of `huifang score`."""
    loan = read_loan_file(loan_path)
    parts = [AudioPart(path, channels)]
    validate_parts(parts, bootstrap.decode_limits(settings))
    bar = _bar(progress, 1, f"scoring {path.name}")
    # The user's own file is read only: nothing is stored, so nothing is rewritten.
    scorer = bootstrap.load_scorer(settings, store_audio=False)
    report = scorer(call_id or path.stem, parts, loan, lambda p: bar(p)).report
    bar(None)
    print(json.dumps(report, ensure_ascii=False, indent=1) if as_json else format_report(read_report(report)))
    return 0


def score_dir(settings: Settings, folder: Path, channels: tuple[str, ...], progress: bool) -> int:
    """Body of `huifang score-dir`: every recording of `folder` (with NAME.json loan files beside them) into the
    database. Returns 0 when all were scored, 1 when some failed."""
    files = archive.recordings_in(folder)
    store = bootstrap.open_store(settings)
    ctx = bootstrap.job_context(settings, store, bootstrap.load_scorer(settings))
    failed = 0
    bar = _bar(progress, len(files), "scoring")
    for index, path in enumerate(files):
        sidecar = path.with_suffix(".json")
        call_id = archive.call_id_of(path)
        try:
            loan = minimal_loan_file(read_loan_file(sidecar)) if sidecar.exists() else None
            job_id = secrets.token_hex(8)
            target = settings.data_dir / "audio" / job_id
            target.mkdir(parents=True, exist_ok=True)
            stored = target / f"call{path.suffix.lower()}"
            shutil.copyfile(path, stored)
            job = store.create_job(call_id, [{"path": str(stored.relative_to(settings.data_dir)),
                                             "channels": list(channels)}], loan, None, job_id)
            claimed = store.claim(job.id, f"score-dir:{os.getpid()}", settings.scoring.lease_s)
            if claimed is not None:  # else a running service took it and will score it
                run_job(ctx, claimed)
            outcome = store.get_job(job.id)
        except (AsrError, RecordingError, ServiceError) as e:
            print(f"{path.name}: {e}", file=sys.stderr)
            failed += 1
            continue
        finally:
            bar(index + 1)
        call = store.get_call(call_id) if outcome and outcome.status == "done" else None
        if call is not None:
            print(f"{call_id}\t{call.risk_score}\t{call.tier}")
        elif outcome is not None and outcome.status == "failed":
            print(f"{path.name}: {outcome.error}", file=sys.stderr)
            failed += 1
    bar(None)
    store.close()
    return 1 if failed else 0


def _bar(enabled: bool, total: float, desc: str) -> Callable[[float | None], None]:
    """A tqdm bar on stderr when `enabled`: call with the absolute position, None to close."""
    if not enabled:
        return lambda _value: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)

    def update(value: float | None) -> None:
        if value is None:
            bar.close()
        else:
            bar.update(max(0.0, min(value, total) - bar.n))

    return update
