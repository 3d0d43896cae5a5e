"""Dependencies of the routes: the application state and what is read from it, and the caller's principal.
Tests replace any of them with `app.dependency_overrides[...]`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from starlette.requests import HTTPConnection

from nlu.assess import Assessor
from service.auth import Principal, Role, TicketBook, TokenRegistry, authenticate
from service.errors import ServiceError, bad_id, unavailable
from service.ids import IdKind, id_problem
from service.live.session import LiveCalls
from service.loanbook.book import LoanBook
from service.settings import Settings
from service.state import AppState
from service.store import Store


def get_state(conn: HTTPConnection) -> AppState:
    """The application state (set by the lifespan; 503 while the service is still starting)."""
    state: AppState | None = getattr(conn.app.state, "huifang", None)
    if state is None:
        raise unavailable("starting", "the service is still starting")
    return state


State = Annotated[AppState, Depends(get_state)]


def get_settings(state: State) -> Settings:
    return state.settings


def get_store(state: State) -> Store:
    """The database; 503 with the reason when it is unavailable."""
    if state.store is None:
        raise unavailable("storage_unavailable", f"storage is not available: {state.store_error or 'not set up'}")
    return state.store


def get_assessor(state: State) -> Assessor:
    return state.assessor


def get_loanbook(state: State) -> LoanBook:
    """The loan book (customers, follow-ups); 503 with the reason while the database is unavailable."""
    if state.loanbook is None:
        raise unavailable("storage_unavailable", f"storage is not available: {state.store_error or 'not set up'}")
    return state.loanbook


def get_calls(state: State) -> LiveCalls:
    return state.calls


def get_tokens(state: State) -> TokenRegistry:
    return state.tokens


def get_tickets(state: State) -> TicketBook:
    return state.tickets


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
AssessorDep = Annotated[Assessor, Depends(get_assessor)]
CallsDep = Annotated[LiveCalls, Depends(get_calls)]
TokensDep = Annotated[TokenRegistry, Depends(get_tokens)]
TicketsDep = Annotated[TicketBook, Depends(get_tickets)]
LoanBookDep = Annotated[LoanBook, Depends(get_loanbook)]


def require(*roles: Role) -> object:
    """Dependency: the caller's principal, which must hold one of `roles` (admin always may)."""

    def dependency(conn: HTTPConnection, tokens: TokensDep) -> Principal:
        return authenticate(tokens, conn.headers, {}, roles)  # HTTP: the header only, never the URL

    return Depends(dependency)


#: Annotated dependencies for the role sets of the HTTP routes.
Viewer = Annotated[Principal, require("agent", "supervisor")]
Admin = Annotated[Principal, require()]
Ingest = Annotated[Principal, require("ingest", "supervisor")]
Anyone = Annotated[Principal, require("ingest", "agent", "supervisor")]
Supervisor = Annotated[Principal, require("supervisor")]


#: Largest `offset` of any paged list (beyond it a filter finds what paging would not): bounded so that a
#: number past what the database's integers hold is a 422, not a 500 with a traceback.
MAX_OFFSET = 1_000_000


def page_bounds(limit: int, offset: int, max_limit: int) -> None:
    """422 `bad_page` unless 1 <= limit <= max_limit and 0 <= offset <= MAX_OFFSET."""
    if not 1 <= limit <= max_limit or not 0 <= offset <= MAX_OFFSET:
        raise ServiceError("bad_page", f"limit must be 1-{max_limit} and offset 0-{MAX_OFFSET}", 422)


def checked_id(value: str | None, kind: IdKind) -> str | None:
    """An id from a path, query or form field, checked by service/ids.py (422 `bad_{kind}_id`); None stays None."""
    return None if value is None else _checked(value, kind)


def _checked(value: str, kind: IdKind) -> str:
    problem = id_problem(value, kind)
    if problem is not None:
        raise bad_id(kind, problem)
    return value


def _call_id(call_id: Annotated[str, Path()]) -> str:
    return _checked(call_id, "call")


def _customer_id(customer_id: Annotated[str, Path()]) -> str:
    return _checked(customer_id, "customer")


def _agent_id(agent_id: Annotated[str, Path()]) -> str:
    return _checked(agent_id, "agent")


#: Path parameters holding ids, checked before the handler runs: a malformed one is 422, never a look-up.
CallIdPath = Annotated[str, Depends(_call_id)]
CustomerIdPath = Annotated[str, Depends(_customer_id)]
AgentIdPath = Annotated[str, Depends(_agent_id)]
