"""Dependencies of the routes: the application state and what is read from it, and the caller's principal.
Tests replace any of them with `app.dependency_overrides[...]`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from nlu.assess import Assessor
from service.auth import Principal, Role, TicketBook, TokenRegistry, authenticate
from service.errors import unavailable
from service.live.session import LiveCalls
from service.loanbook import LoanBook
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
