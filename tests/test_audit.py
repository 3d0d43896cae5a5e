"""Evidence integrity (hash-chained audit log, `huifang audit verify`) and the encrypted raw transcript."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from service.app import state_of
from service.settings import Settings
from service.store import Store, audit
from tests.test_recordings import _script, _upload, _wait


def _scored_call(make_client: Any, shared_data: Path, **settings: Any) -> Any:
    script = _script(shared_data, "call_s11")  # a new phone number, ID and card digits spoken
    client = make_client(script, **settings)
    job = _upload(client, shared_data / "calls" / "call_s11.flac", call_id="s11",
                  loan_file=json.dumps(script["loan_file"], ensure_ascii=False)).json()
    assert _wait(client, job["id"])["status"] == "done"
    return client


def test_the_chain_verifies_and_every_change_is_found(make_client: Any, shared_data: Path, tmp_path: Path) -> None:
    client = _scored_call(make_client, shared_data)
    assert client.get("/v1/calls/s11/report").status_code == 200  # access is itself audited
    store: Store = state_of(client.app).store  # type: ignore[arg-type]
    result = audit.verify(store)
    assert result.ok and result.entries >= 2, result.problems
    with store.session() as s:
        kinds = [r[0] for r in s.execute(text("SELECT kind FROM audit_log ORDER BY id"))]
    assert kinds[:2] == ["report", "report_read"]

    def broken_by(sql: str, undo: str, params: dict[str, Any] | None = None) -> tuple[str, ...]:
        with store.engine.begin() as conn:
            conn.execute(text(sql))
        problems = audit.verify(store).problems
        with store.engine.begin() as conn:
            conn.execute(text(undo), params or {})
        assert audit.verify(store).ok
        return problems

    payload = store.engine.connect().execute(text("SELECT payload FROM audit_log WHERE id = 1")).scalar_one()
    edited = broken_by("UPDATE audit_log SET payload = replace(payload, 'tier', 'tire') WHERE id = 1",
                       "UPDATE audit_log SET payload = :p WHERE id = 1", {"p": payload})
    assert any("entry 1" in p and "changed" in p for p in edited)
    swap = ["UPDATE audit_log SET id = -1 WHERE id = 1", "UPDATE audit_log SET id = 1 WHERE id = 2",
            "UPDATE audit_log SET id = 2 WHERE id = -1"]
    with store.engine.begin() as conn:
        for statement in swap:
            conn.execute(text(statement))
    assert any("does not follow" in p for p in audit.verify(store).problems)
    with store.engine.begin() as conn:
        for statement in swap:
            conn.execute(text(statement))
    assert audit.verify(store).ok
    report = store.engine.connect().execute(text("SELECT report FROM calls WHERE call_id = 's11'")).scalar_one()
    tampered = broken_by("UPDATE calls SET report = replace(report, 'risk_score', 'risk_scor') WHERE call_id = 's11'",
                         "UPDATE calls SET report = :r WHERE call_id = 's11'", {"r": report})
    assert any("differs from the audited" in p for p in tampered)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = 1"))
    assert any("missing" in p or "does not follow" in p for p in audit.verify(store).problems)

    # The command line says the same, with exit code 1.
    env = {**os.environ, "HUIFANG_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-m", "service.cli", "audit", "verify"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 1 and "BROKEN" in run.stderr


def test_the_command_line_verifies_an_intact_log(make_client: Any, shared_data: Path, tmp_path: Path) -> None:
    _scored_call(make_client, shared_data)
    env = {**os.environ, "HUIFANG_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-m", "service.cli", "audit", "verify"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 0 and "intact" in run.stdout


def test_the_raw_transcript_is_kept_encrypted_for_admins_only(make_client: Any, shared_data: Path,
                                                              tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "raw.key"
    client = _scored_call(make_client, shared_data, privacy={"keep_raw": True, "key_file": key})
    spoken = "一三九零一二三四五六七"
    report = client.get("/v1/calls/s11/report").text
    assert spoken not in report and "[手机号]" in report
    raw = client.get("/v1/calls/s11/raw").json()  # the development token is an admin's
    assert any(spoken in u["text"] for u in raw["utterances"])
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
    database = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("huifang.db*"))
    assert spoken.encode() not in database and b"13901234567" not in database
    store: Store = state_of(client.app).store  # type: ignore[arg-type]
    with store.session() as s:
        kinds = [r[0] for r in s.execute(text("SELECT kind FROM audit_log ORDER BY id"))]
    assert "raw_read" in kinds


def test_nothing_raw_is_kept_by_default(make_client: Any, shared_data: Path) -> None:
    client = _scored_call(make_client, shared_data)
    assert client.get("/v1/calls/s11/raw").status_code == 404
    assert Settings().privacy.keep_raw is False


def test_stored_audio_is_silenced_where_personal_data_was_said(make_client: Any, shared_data: Path,
                                                                tmp_path: Path) -> None:
    import numpy as np

    from asr.audio import decode_audio

    client = _scored_call(make_client, shared_data)
    report = client.get("/v1/calls/s11/report").json()
    spans = report["silenced_audio"]
    assert spans and {s["channel"] for s in spans} == {"customer"}
    stored = client.get(report["audio"][0]["url"])
    assert stored.status_code == 200 and stored.headers["content-type"] == "audio/flac"
    path = tmp_path / "stored.flac"
    path.write_bytes(stored.content)
    audio = decode_audio(str(path)).samples
    original = decode_audio(str(shared_data / "calls" / "call_s11.flac")).samples
    for span in spans:
        a, b = int(span["start_s"] * 16000), int(span["end_s"] * 16000)
        assert np.abs(audio[1, a:b]).max() == 0.0 and np.abs(original[1, a:b]).max() > 0.01
    assert np.abs(audio[0]).max() > 0.01  # the agent's side is untouched
