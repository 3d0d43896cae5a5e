"""`/v1/tickets`: short-lived credentials for the one place a browser cannot send a header, a websocket URL."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import Anyone, TicketsDep, checked_id
from service.errors import ServiceError, forbidden
from service.floor import LIVE_TICKET_SCOPE

router = APIRouter(tags=["access"])


class TicketRequest(BaseModel):
    call_id: str | None = Field(None, max_length=1024, description="the call whose websocket the ticket opens "
                                "(scope `call`)")
    scope: Literal["call", "live"] = Field("call", description="`call`: one call's `/events` or `/audio`; `live`: "
                                           "the supervisors' floor, `/v1/live/events` (supervisors and admins)")


class TicketIssued(BaseModel):
    ticket: str = Field(..., description="send as `?ticket=` on `/v1/calls/{call_id}/events` (or `/audio`), or on "
                        "`/v1/live/events` for scope `live`")
    expires_in_s: float


@router.post("/v1/tickets", status_code=201)
async def new_ticket(body: TicketRequest, principal: Anyone, tickets: TicketsDep) -> TicketIssued:
    """A ticket for one call's websocket, or (`{"scope": "live"}`) for the floor's, valid for 60 s, with the
    caller's role and agent: the token itself stays in the `Authorization` header and never appears in a URL.
    What the socket then allows is decided as for the token (an agent still sees only their own calls; the floor
    is for supervisors and admins, so other roles get 403 here for it). A floor ticket opens no call's socket,
    nor a call's ticket the floor's."""
    if body.scope == "live":
        if principal.role not in ("supervisor", "admin"):
            raise forbidden(f"the {principal.role} role may not watch the floor")
        return TicketIssued(ticket=tickets.mint(principal, LIVE_TICKET_SCOPE), expires_in_s=tickets.ttl_s)
    if body.call_id is None:
        raise ServiceError("bad_call_id", "call_id is required for a call's ticket", 422)
    checked_id(body.call_id, "call")
    return TicketIssued(ticket=tickets.mint(principal, body.call_id), expires_in_s=tickets.ttl_s)
