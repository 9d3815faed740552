"""A radiologist's sign-off of a draft (scope report.feedback):

    POST /api/v1/reports/{report_id}/feedback   FeedbackRequest: the signed final text, rating 1-5, outcome

The service records the word-level edit distance and the report labeler's labels of the signed text in the
prediction log (never the text) and adds the study to the validated-study pool when the text passes the PHI
screen; the answer says which (serving.service.ReportService.submit_feedback).
"""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import AUTHENTICATED, ERRORS, Caller, Service
from serving.schemas import API, FeedbackRequest, FeedbackResponse

router = APIRouter(prefix=f"{API}/reports", tags=["feedback"], dependencies=AUTHENTICATED)


@router.post("/{report_id}/feedback", response_model=FeedbackResponse, responses=ERRORS)
async def submit_feedback(service: Service, principal: Caller, report_id: str,
                          body: FeedbackRequest) -> FeedbackResponse:
    """Record a radiologist's sign-off: the signed text (only its hash and labels are kept in the log), a 1-5
    rating and the outcome (accepted, edited, rejected)."""
    return await service.submit_feedback(report_id, body, principal)
