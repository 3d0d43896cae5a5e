"""`huifang score FILE` and `huifang score-dir DIR`: post-call scoring from the command line.

`score` prints one call's report and stores nothing. `score-dir` scores every recording of a folder into the
database (the one the service uses), exactly as uploads are scored, with a progress bar.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asr.errors import AsrError
from nlu.pii import minimal_loan_file
from nlu.report import load_risk
from service.jobs import JobContext, run_job
from service.privacy import RawTextCipher
from service.scoring import AudioPart, RecordingError, Scored, parse_loan_file, score_parts, validate_parts
from service.settings import Settings
from service.store import Store

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
LABEL_NAMES = {"clear": "回答清晰", "omission": "信息遗漏", "unclear": "表述不清", "evasive": "避而不答"}


def read_loan_file(path: Path | None) -> dict[str, Any] | None:
    """A loan file from JSON: the object itself, or an object with a `loan_file` key (the calls' sidecars)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AsrError(f"cannot read loan file {path}: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("loan_file"), dict):
        data = data["loan_file"]
    try:
        return parse_loan_file(json.dumps(data, ensure_ascii=False))
    except RecordingError as e:
        raise AsrError(f"{path}: {e}") from e


Scorer = Callable[[str, list[AudioPart], dict[str, Any] | None, Callable[[float], None]], Scored]


def _scorer(settings: Settings, store_audio: bool = True) -> Scorer:
    from asr.streaming import SileroStep
    from asr.transcribe import Transcriber

    transcriber = Transcriber(settings.asr_options())
    transcriber.load()
    assessor, risk, vad = settings.assessor(), load_risk(settings.recordings.risk_file), SileroStep()
    limits, options, seg = settings.decode_limits(), settings.dialogue_options(), settings.segment_options()

    def score(call_id: str, parts: list[AudioPart], loan: dict[str, Any] | None,
              progress: Callable[[float], None]) -> Scored:
        return score_parts(call_id, parts, loan, transcriber, assessor, limits, options, risk, vad, seg, progress,
                           settings.privacy.silence_audio and store_audio)

    return score


def format_report(report: dict[str, Any]) -> str:
    """The report for a person at a terminal."""
    lines = [f"通话 {report['call_id']}  时长 {report['duration_s']:.0f} 秒  "
             f"风险 {report['risk_score']} ({report['tier']})"]
    for c in report["contributions"]:
        lines.append(f"  +{c['points']:.0f}  {c['reason']}  {c['evidence']}")
    lines.append("核对清单:")
    for t in report["topics"]:
        if not t["asked"]:
            continue
        label = LABEL_NAMES.get(t["label"], "未回答") if t["label"] else "待回答"
        if t["mismatch"]:
            label += f"，与档案不符（{t['mismatch']['stated']:g} / {t['mismatch']['on_file']:g}）"
        lines.append(f"  {t['name']}: {label}  {t['answer_text'] or ''}")
    not_asked = [t["name"] for t in report["topics"] if not t["asked"]]
    if not_asked:
        lines.append(f"  未询问: {'、'.join(not_asked)}")
    if report["actions"]:
        lines.append("建议措施:")
        lines += [f"  - {a['text']}" for a in report["actions"]]
    return "\n".join(lines)


def score_file(settings: Settings, path: Path, loan_path: Path | None, channels: tuple[str, ...], call_id: str | None,
               as_json: bool, progress: bool) -> int:
    """Body of `huifang score`."""
    loan = read_loan_file(loan_path)
    parts = [AudioPart(path, channels)]
    try:
        validate_parts(parts, settings.decode_limits())
    except RecordingError as e:
        raise AsrError(str(e)) from e
    bar = _bar(progress, 1, f"scoring {path.name}")
    # The user's own file is read only: nothing is stored, so nothing is rewritten.
    report = _scorer(settings, store_audio=False)(call_id or path.stem, parts, loan, lambda p: bar(p)).report
    bar(None)
    print(json.dumps(report, ensure_ascii=False, indent=1) if as_json else format_report(report))
    return 0


def score_dir(settings: Settings, folder: Path, channels: tuple[str, ...], progress: bool) -> int:
    """Body of `huifang score-dir`: every recording of `folder` (with NAME.json loan files beside them) into the
    database. Returns 0 when all were scored, 1 when some failed."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []
    if not folder.is_dir():
        raise AsrError(f"{folder} is not a folder")
    if not files:
        raise AsrError(f"no recordings ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    store = Store(settings.db_url)
    store.migrate()
    cipher = RawTextCipher(settings.raw_key_file) if settings.privacy.keep_raw else None
    ctx = JobContext(store, settings.data_dir, _scorer(settings), settings.recordings.retention_days, cipher)
    failed = 0
    bar = _bar(progress, len(files), "scoring")
    for index, path in enumerate(files):
        sidecar = path.with_suffix(".json")
        call_id = path.name.split(".")[0]
        try:
            loan = minimal_loan_file(read_loan_file(sidecar)) if sidecar.exists() else None
            job_id = secrets.token_hex(8)
            target = settings.data_dir / "audio" / job_id
            target.mkdir(parents=True, exist_ok=True)
            stored = target / f"call{path.suffix.lower()}"
            shutil.copyfile(path, stored)
            job = store.create_job(call_id, [{"path": str(stored.relative_to(settings.data_dir)),
                                             "channels": list(channels)}], loan, None, job_id)
            claimed = store.claim(job.id)
            if claimed is not None:  # else a running service took it and will score it
                run_job(ctx, claimed)
            outcome = store.get_job(job.id)
        except AsrError as e:
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
