"""`/v1/tickets`: short-lived credentials for the one place a browser cannot send a header, a websocket URL."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import Anyone, TicketsDep, checked_id

router = APIRouter(tags=["access"])


class TicketRequest(BaseModel):
    call_id: str = Field(..., max_length=1024, description="the call whose websocket the ticket opens")


class TicketIssued(BaseModel):
    ticket: str = Field(..., description="send as `?ticket=` on `/v1/calls/{call_id}/events` (or `/audio`)")
    expires_in_s: float


@router.post("/v1/tickets", status_code=201)
async def new_ticket(body: TicketRequest, principal: Anyone, tickets: TicketsDep) -> TicketIssued:
    """A ticket for one call's websocket, valid for 60 s, with the caller's role and agent: the token itself
    stays in the `Authorization` header and never appears in a URL. What the socket then allows is decided as
    for the token (an agent still sees only their own calls)."""
    checked_id(body.call_id, "call")
    return TicketIssued(ticket=tickets.mint(principal, body.call_id), expires_in_s=tickets.ttl_s)
