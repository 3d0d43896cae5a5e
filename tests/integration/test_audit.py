"""Evidence integrity (hash-chained audit log, `huifang audit verify`) and the encrypted raw transcript."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from service.app import state_of
from service.reports import answer_labels, report_row
from service.settings import Settings
from service.store import Store, audit
from tests.integration.test_recordings import _script, _upload, _wait
from tests.support.reports import stored_report


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
    result = audit.verify(store, labels_of=answer_labels)
    assert result.ok and result.entries >= 2, result.problems
    with store.session() as s:
        kinds = [r[0] for r in s.execute(text("SELECT kind FROM audit_log ORDER BY id"))]
    assert kinds[:2] == ["report", "report_read"]

    def broken_by(sql: str, undo: str, params: dict[str, Any] | None = None) -> tuple[str, ...]:
        with store.engine.begin() as conn:
            conn.execute(text(sql))
        problems = audit.verify(store, labels_of=answer_labels).problems
        with store.engine.begin() as conn:
            conn.execute(text(undo), params or {})
        assert audit.verify(store, labels_of=answer_labels).ok
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
    assert any("does not follow" in p for p in audit.verify(store, labels_of=answer_labels).problems)
    with store.engine.begin() as conn:
        for statement in swap:
            conn.execute(text(statement))
    assert audit.verify(store, labels_of=answer_labels).ok
    report = store.engine.connect().execute(text("SELECT report FROM calls WHERE call_id = 's11'")).scalar_one()
    tampered = broken_by("UPDATE calls SET report = replace(report, 'risk_score', 'risk_scor') WHERE call_id = 's11'",
                         "UPDATE calls SET report = :r WHERE call_id = 's11'", {"r": report})
    assert any("differs from the audited" in p for p in tampered)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = 1"))
    assert any("missing" in p or "does not follow" in p for p in audit.verify(store, labels_of=answer_labels).problems)

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


# -- Signed checkpoints outside the database (issue #16 point 6) ------------------------------------------------

def _anchored_store(tmp_path: Path) -> tuple[Store, Path, Path]:
    from service.store.anchor import Anchor, load_or_create_key

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    key, points = tmp_path / "keys" / "audit.key", tmp_path / "audit" / "checkpoints"
    store.anchor = Anchor(points, load_or_create_key(key))
    return store, points, key


def _score(store: Store, call_id: str, agent_id: str) -> None:
    report = stored_report(call_id, "medium", 40, {"term": "unclear"}, duration_s=30.0, confidence=0.7)
    job = store.create_job(call_id, [], {"customer_id": "K1", "loan_id": "L1"}, agent_id)
    store.complete_job(job.id, report_row(report), agent_id, None, None)
    audit.append(store, "report", "scoring", call_id, {"report_sha256": audit.digest(report), "agent_id": agent_id,
                                                       "customer_id": "K1", "loan_id": "L1", "risk_score": 40,
                                                       "tier": "medium"})


def _verify(store: Store, points: Path, key: Path) -> tuple[str, ...]:
    from service.store.anchor import load_public_key, public_key_path, read_checkpoints

    checkpoints, problems = read_checkpoints(points, load_public_key(public_key_path(key)))
    return tuple(problems) + audit.verify(store, checkpoints, labels_of=answer_labels).problems


def test_cutting_the_tail_is_caught_by_the_checkpoints(tmp_path: Path) -> None:
    store, points, key = _anchored_store(tmp_path)
    _score(store, "c1", "A1")
    audit.append(store, "raw_read", "admin-1", "c1", {})  # the read someone would like to hide
    assert _verify(store, points, key) == ()
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)"))
    assert audit.verify(store, labels_of=answer_labels).ok  # the chain alone cannot tell
    assert any("ends before entry 2" in p for p in _verify(store, points, key))


def test_a_rehashed_chain_is_caught_by_the_checkpoints(tmp_path: Path) -> None:
    from service.store.audit import entry_hash

    store, points, key = _anchored_store(tmp_path)
    _score(store, "c1", "A1")
    audit.append(store, "report_read", "agent-1", "c1", {"role": "agent"})
    with store.engine.begin() as conn:  # edit the first entry and re-hash everything after it, as an insider could
        rows = conn.execute(text("SELECT id, at, call_id, kind, actor, payload FROM audit_log ORDER BY id")).all()
        prev = "0" * 64
        for seq, at, call_id, kind, actor, payload in rows:
            payload = payload.replace('"medium"', '"low"')
            at = datetime.fromisoformat(str(at))
            new = entry_hash(seq, at, call_id, kind, actor, payload, prev)
            conn.execute(text("UPDATE audit_log SET payload = :p, prev_hash = :v, hash = :h WHERE id = :i"),
                         {"p": payload, "v": prev, "h": new, "i": seq})
            prev = new
    assert not any("content was changed" in p for p in audit.verify(store, labels_of=answer_labels).problems)
    assert any("was rewritten" in p for p in _verify(store, points, key))


def test_the_columns_access_depends_on_are_covered(tmp_path: Path) -> None:
    store, points, key = _anchored_store(tmp_path)
    _score(store, "c1", "A1")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE calls SET agent_id = 'A2' WHERE call_id = 'c1'"))  # hand the call to another agent
    assert any("agent_id differs" in p for p in audit.verify(store, labels_of=answer_labels).problems)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE calls SET agent_id = 'A1', tier = 'low' WHERE call_id = 'c1'"))
        conn.execute(text("UPDATE answers SET label = 'clear' WHERE call_id = 'c1'"))
    problems = audit.verify(store, labels_of=answer_labels).problems
    assert any("tier differs" in p for p in problems) and any("answer labels differ" in p for p in problems)
    assert not any("answer labels" in p for p in audit.verify(store).problems)  # only told how to read a report
    with store.engine.begin() as conn:  # move the call to another customer (whose agents would then see it)
        conn.execute(text("UPDATE calls SET customer_id = 'K2' WHERE call_id = 'c1'"))
    assert any("customer_id differs" in p for p in audit.verify(store, labels_of=answer_labels).problems)


def test_checkpoints_are_signed_and_seal_an_older_chain(tmp_path: Path) -> None:
    from service.store.anchor import Anchor, load_or_create_key

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    _score(store, "old", "A1")  # written before checkpoints were kept
    key, points = tmp_path / "k" / "audit.key", tmp_path / "cp"
    store.anchor = Anchor(points, load_or_create_key(key))
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    sealed = audit.checkpoint(store)
    assert sealed is not None and sealed.seq == 1 and _verify(store, points, key) == ()
    forged = points.read_text().replace('"seq": 1', '"seq": 7')
    points.write_text(forged)
    assert any("not signed by the audit key" in p for p in _verify(store, points, key))


def test_the_command_line_reads_the_checkpoints(tmp_path: Path) -> None:
    from service.store.anchor import Anchor, load_or_create_key

    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'huifang.db'}")
    store.migrate()
    store.anchor = Anchor(data / "audit" / "checkpoints", load_or_create_key(data / "keys" / "audit-ed25519.key"))
    _score(store, "c1", "A1")
    audit.append(store, "call_deleted", "admin-1", "c9", {})
    env = {**os.environ, "HUIFANG_DATA_DIR": str(data)}
    verify = [sys.executable, "-m", "service.cli", "audit", "verify"]
    ok = subprocess.run(verify, capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0 and "checkpoints hold" in ok.stdout, ok.stderr
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE kind = 'call_deleted'"))
    cut = subprocess.run(verify, capture_output=True, text=True, env=env, timeout=60)
    assert cut.returncode == 1 and "entries were removed" in cut.stderr
    alone = subprocess.run([*verify, "--no-checkpoints"], capture_output=True, text=True, env=env, timeout=60)
    assert alone.returncode == 0
