"""The follow-up work queue (issue #18): what is due, for whom, and what came of it. Supervisors see and assign
every follow-up; an agent sees only the ones assigned to them and records their outcome. Every change is audited."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import LoanBookDep, Supervisor, Viewer, checked_id, page_bounds
from service.errors import ServiceError, forbidden
from service.ids import AgentId
from service.loanbook.book import FollowUpError, FollowUpNotFound, FollowUpQuery
from service.store import audit

router = APIRouter(tags=["followups"])

StatusName = Literal["open", "assigned", "done", "unreachable", "refused", "cancelled"]


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: AgentId = Field(description="the agent_id who will do the follow-up")


class FollowUpItem(BaseModel):
    """A follow-up as the work queue and the customer page show it (times in UTC with `Z`)."""

    id: str
    customer_id: str
    loan_id: str | None
    due_date: date
    channel: str
    reason: str
    #: The reason as the pages word it (configs/risk.yaml's action text).
    reason_text: str
    topics: list[str]
    topic_names: list[str]
    status: StatusName
    assignee: str | None
    outcome_note: str | None
    #: The call that closed it, and the call it was planned from.
    call_id: str | None
    source_call_id: str | None
    tier: str | None
    created_at: str | None
    updated_at: str | None


class FollowUpPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[FollowUpItem]


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["done", "unreachable", "refused", "cancelled"]
    note: str | None = Field(None, max_length=2000, description="what happened (personal numbers, names, e-mail and "
                             "street addresses are masked)")


@router.get("/v1/followups", response_model=FollowUpPage)
async def work_queue(principal: Viewer, book: LoanBookDep, due_before: date | None = None,
                     status: list[StatusName] = Query(default=["open", "assigned"]),  # noqa: B008 - FastAPI's way
                     assignee: str | None = None, tier: Literal["low", "medium", "high"] | None = None,
                     customer_id: str | None = Query(None, max_length=1024),  # noqa: B008 - FastAPI's way
                     limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """Follow-ups, soonest due first: `due_before` (a date in the bank's time zone), `status` (repeatable; open
    and assigned by default), `assignee`, the customer's `tier`, `customer_id`. An agent gets their own only."""
    page_bounds(limit, offset, 500)
    checked_id(customer_id, "customer")
    checked_id(assignee, "agent")
    if principal.role == "agent":
        if assignee not in (None, principal.agent_id):
            raise forbidden("agents see only the follow-ups assigned to them")
        assignee = principal.agent_id
    query = FollowUpQuery(due_before, tuple(status), assignee, tier, customer_id, limit, offset)
    items, total = await asyncio.to_thread(book.followups, query)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.post("/v1/followups/{followup_id}/assign", response_model=FollowUpItem)
async def assign(followup_id: str, body: Assignment, principal: Supervisor, book: LoanBookDep) -> dict[str, Any]:
    """Give an open follow-up to an agent (supervisors)."""
    try:
        item = await asyncio.to_thread(book.assign, followup_id, body.assignee)
    except FollowUpError as e:
        raise _refused(e) from e
    await asyncio.to_thread(audit.append, book.store, "followup_assigned", principal.name, item["source_call_id"],
                            {"followup_id": followup_id, "customer_id": item["customer_id"],
                             "assignee": body.assignee})
    return item


@router.post("/v1/followups/{followup_id}/outcome", response_model=FollowUpItem)
async def outcome(followup_id: str, body: Outcome, principal: Viewer, book: LoanBookDep) -> dict[str, Any]:
    """Record what came of a follow-up: `done`, `unreachable`, `refused` or `cancelled`, with a note. The agent it
    is assigned to records it (supervisors may too)."""
    agent = principal.agent_id if principal.role == "agent" else None
    if principal.role == "agent" and agent is None:
        raise forbidden("an agent token without agent_id has no follow-ups")
    try:
        item = await asyncio.to_thread(book.outcome, followup_id, body.status, body.note, agent)
    except PermissionError as e:
        raise forbidden(str(e)) from e
    except FollowUpError as e:
        raise _refused(e) from e
    await asyncio.to_thread(audit.append, book.store, "followup_outcome", principal.name, item["source_call_id"],
                            {"followup_id": followup_id, "customer_id": item["customer_id"],
                             "status": body.status})
    return item


def _refused(e: FollowUpError) -> ServiceError:
    if isinstance(e, FollowUpNotFound):
        return ServiceError("not_found", str(e), 404)
    return ServiceError("conflict", str(e), 409)
