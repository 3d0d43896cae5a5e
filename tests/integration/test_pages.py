"""The pages' shells without a browser (issue #27): the landing page, the favicon, the API's docs with Swagger UI
served by the service itself (no CDN), and `/v1/me`, which tells a page who the token is, which pages it may open
and the bank's time zone. The pages themselves are driven in tests/browser/test_pages_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.integration.test_live_socket import FakeTranscriber
from tests.support.server import bearer, tokens_client

TOKENS = {"ing": ("ingest", None), "a1": ("agent", "A1"), "sup": ("supervisor", None), "adm": ("admin", None)}
READERS = ["/console", "/calls", "/customers", "/followups"]


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber(), loanbook={"timezone": "Asia/Hong_Kong"}) as c:
        yield c


def test_me_lists_the_pages_each_role_may_open_and_the_banks_zone(client: TestClient) -> None:
    assert client.get("/v1/me").status_code == 401
    assert client.get("/v1/me", headers=bearer("nope")).status_code == 401
    pages = {}
    for token in TOKENS:
        me = client.get("/v1/me", headers=bearer(token)).json()
        assert me["timezone"] == "Asia/Hong_Kong" and me["role"] == TOKENS[token][0]
        assert all(p["title"] and p["summary"] for p in me["pages"])
        pages[token] = ([p["path"] for p in me["pages"]], me["docs"] and me["docs"]["path"])
    # The wallboard and the review queue: supervisors only.
    assert pages["sup"] == (["/console", "/live", *READERS[1:], "/agents", "/reviews"], "/docs")
    assert pages["adm"] == pages["sup"]
    assert pages["a1"] == ([*READERS, "/agents/A1"], None)  # their own scorecard, not the list of all
    assert pages["ing"] == ([], "/docs")  # a switch reads no page


def test_each_listed_page_opens_for_its_role(client: TestClient) -> None:
    """What /v1/me lists is what the role's token may read: the API behind each page answers it."""
    behind = {"/calls": "/v1/calls", "/customers": "/v1/customers", "/followups": "/v1/followups",
              "/agents": "/v1/agents", "/agents/A1": "/v1/agents/A1", "/console": "/v1/demo/calls",
              "/live": "/v1/live/calls", "/reviews": "/v1/reviews"}
    for token in TOKENS:
        listed = {p["path"] for p in client.get("/v1/me", headers=bearer(token)).json()["pages"]}
        for page in listed:
            assert client.get(behind[page], headers=bearer(token)).status_code == 200, (token, page)
        # Not listed: the API refuses the page's first request.
        for page in {*READERS, "/live", "/agents", "/reviews"} - listed:
            assert client.get(behind[page], headers=bearer(token)).status_code == 403, (token, page)


def test_the_landing_page_favicon_and_docs_need_nothing_from_outside(client: TestClient) -> None:
    landing = client.get("/")
    assert landing.status_code == 200 and "/static/index.js" in landing.text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/static/swagger-ui/swagger-ui-bundle.js" in docs.text and "/static/swagger-ui/swagger-ui.css" in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/static/swagger-ui/{asset}").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN: not offered
    assert any(path == "/v1/me" for path in client.get("/openapi.json").json()["paths"])


def test_start_up_prints_the_landing_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first URL a new user is given is the page that lists the others (with the development token)."""
    from service.app import state_of

    app = create_app(Settings(data_dir=tmp_path / "data"), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with TestClient(app):
        token = state_of(app).dev_token
        assert f"pages: http://127.0.0.1:8000/#token={token}\n" in capsys.readouterr().out
