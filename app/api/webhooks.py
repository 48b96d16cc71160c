"""Webhook deliveries: every attempt of every event, and redelivery by hand."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from app.api.deps import ReadConnectionDep, WriteAccess
from app.api.responses import DATABASE_DOWN, UNAUTHORIZED, Problem, not_found
from app.models import Page
from app.notify import deliveries
from app.notify.models import DeliveryPublic, DeliveryStatus

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

DeliveryId = Annotated[int, Path(ge=1, le=2**62, description="Delivery id")]


@router.get(
    "/deliveries",
    operation_id="list_webhook_deliveries",
    summary="List webhook deliveries",
    response_description="A page of deliveries, newest first, each with every attempt",
    responses=DATABASE_DOWN,
)
def read_webhook_deliveries(
    connection: ReadConnectionDep,
    status: Annotated[
        DeliveryStatus | None, Query(description="Only deliveries with this status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000, description="Rows to skip")] = 0,
) -> Page[DeliveryPublic]:
    """Each event sent to each receiver: its webhook-id, status and every attempt (time,
    receiver with its path hidden, response status, latency, error)."""
    items, total = deliveries.page(connection, status, limit, offset)
    return Page[DeliveryPublic](items=items, total=total, limit=limit, offset=offset)


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    operation_id="redeliver_webhook",
    summary="Send a delivery again",
    status_code=status.HTTP_202_ACCEPTED,
    response_description="The delivery, queued again",
    dependencies=[WriteAccess],
    responses={
        **not_found("delivery"),
        409: {"model": Problem, "description": "The delivery is still pending"},
        **UNAUTHORIZED,
        **DATABASE_DOWN,
    },
)
def redeliver_webhook(connection: ReadConnectionDep, delivery_id: DeliveryId) -> DeliveryPublic:
    """Queue an ended delivery (delivered, failed or gone) again with the same webhook-id and
    the retry schedule from its start; a receiver that had answered 410 is tried again."""
    try:
        delivery = deliveries.redeliver(connection, delivery_id)
    except deliveries.StillPending as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    if delivery is None:
        raise HTTPException(status_code=404, detail=f"webhook delivery {delivery_id} not found")
    return delivery
