"""The HTTP API's schemas: every JSON route documents its 200 body (`/docs` shows real schemas), and the report
routes send a report stored by an earlier version (format 1, tests/data/report_format1.json) exactly as it was
stored, read through the one reader (`nlu.report.read_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import state_of
from service.reports import report_row
from tests.integration.test_live_socket import FakeTranscriber
from tests.support.reports import stored_report
from tests.support.server import bearer, tokens_client
from tests.unit.test_report_format import _stored_1

TOKENS = {"sup": ("supervisor", None), "adm": ("admin", None)}


@pytest.fixture()
def client(tmp_path: Path) -> Any:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber()) as c:
        yield c


def _resolved(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_json_route_documents_its_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    json_routes, untyped = 0, []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for code, response in op["responses"].items():
                body = response.get("content", {}).get("application/json")
                if not code.startswith("2") or body is None:
                    continue
                json_routes += 1
                schema = _resolved(spec, body.get("schema") or {})
                if schema.get("type") == "array":
                    schema = _resolved(spec, schema.get("items") or {})
                if not schema.get("properties"):  # `{}` or a bare object: /docs would show nothing
                    untyped.append(f"{method.upper()} {path} {code}")
    assert json_routes >= 20 and not untyped, untyped
    report = _resolved(spec, spec["paths"]["/v1/calls/{call_id}/report"]["get"]["responses"]["200"]["content"]
                       ["application/json"]["schema"])
    assert {"topics", "risk_score", "tier", "agent", "audio"} <= report["properties"].keys()
    assert "format_version" not in report["properties"]  # storage's business, not the wire's


def _store(client: TestClient, report: dict[str, Any]) -> None:
    store = state_of(client.app).store
    assert store is not None
    job = store.create_job(report["call_id"], [], None, "A1")
    assert store.claim(job.id) is not None
    store.complete_job(job.id, report_row(report), "A1", None, None)


def test_a_report_stored_before_format_versions_is_sent_as_it_was_stored(client: TestClient) -> None:
    old = _stored_1()
    _store(client, old)
    sent = client.get(f"/v1/calls/{old['call_id']}/report", headers=bearer("sup")).json()
    assert sent.pop("audio") == [] and sent.pop("agent_id") == "A1" and sent.pop("created_at")
    assert (sent.pop("source"), sent.pop("complete"), sent.pop("reprocessing")) == ("upload", True, False)
    assert (sent.pop("live_labels"), sent.pop("redecoded")) == ({}, [])  # not a live call: nothing re-decoded
    assert sent.pop("notes") == []  # no supervisor wrote to the agent during it
    assert sent.pop("prompt_feedback") == []  # no agent's verdict on its prompts (#31)
    for prompt in sent["agent"]["prompts"]:  # prompts name their question since #31: unknown in format 1
        assert prompt.pop("question_utterance_id") is None
    assert sent == old
    _store(client, stored_report(old["call_id"]))  # a newer scoring (format 2) replaces it
    [version] = client.get(f"/v1/calls/{old['call_id']}/versions", headers=bearer("adm")).json()["versions"]
    for prompt in version["report"]["agent"]["prompts"]:
        assert prompt.pop("question_utterance_id") is None
    assert version["report"] == {**old, "live_labels": {}, "redecoded": []}
    listed = client.get("/v1/calls", headers=bearer("sup")).json()["items"]
    assert [c["labels"] for c in listed] == [{}]
