"""`/v1/assess`: assess one (question, answer) pair, as `python -m nlu.assess` does for a file."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from nlu.types import LoanRecord
from service.api.deps import AssessorDep, Viewer
from service.protocol import LoanFile

router = APIRouter(tags=["assessment"])


class AssessRequest(BaseModel):
    """One agent question and the customer's answer (ASR text)."""

    question: str = Field(..., max_length=2000, examples=["您每月的还款日是哪一天？"])
    answer: str = Field("", max_length=2000, examples=["大概月中吧，十几号的样子。"])
    loan_file: LoanFile | None = None
    silence_s: float | None = Field(None, ge=0, le=3600, description="silence after the question, if no answer")
    topic: str | None = Field(None, max_length=64, description="skip question detection and use this topic")


class AssessResponse(BaseModel):
    topic: str | None
    label: str
    confidence: float
    evidence: list[dict[str, Any]]
    slots: list[dict[str, Any]]
    mismatch: dict[str, Any] | None
    prompt: str | None


@router.post("/v1/assess", response_model=AssessResponse)
async def assess(body: AssessRequest, assessor: AssessorDep, _: Viewer) -> dict[str, Any]:
    """Label the answer (clear / omission / unclear / evasive) with evidence, slots, mismatch and a prompt."""
    loan = LoanRecord.from_mapping(body.loan_file.model_dump()) if body.loan_file else None
    # Rules run in microseconds-to-milliseconds, but pinyin look-ups touch large tables on first use.
    result = await asyncio.to_thread(assessor.assess, body.question, body.answer, loan, body.silence_s, body.topic)
    return result.to_dict()
