"""What the ranking service's routes depend on (FastAPI dependencies): the app's ``Ranker``, and
the requests' shapes and rules (ids: ``contract.request_id``; a /v1/score body read as JSON
whatever type it declares, as TF Serving reads it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from infra.ranking.service import Ranker
from railyard.contract import InvalidId, request_id

MAX_INSTANCES = 1_000  # per /v1/score request


def get_ranker(request: Request) -> Ranker:
    """The app's ranker (``create_app`` puts it in the app's state)."""
    return request.app.state.ranker


RankerDep = Annotated[Ranker, Depends(get_ranker)]


def _request_id(value: int, info: ValidationInfo) -> int:
    try:
        # A query parameter's validator is told no name: userId is the only one.
        return request_id(info.field_name or "userId", value)
    except InvalidId as bad:
        raise ValueError(str(bad)) from None


RequestId = Annotated[int, AfterValidator(_request_id)]


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    userId: RequestId  # noqa: N815 - the request's field names are TF Serving's
    movieId: RequestId  # noqa: N815


class ScoreRequest(BaseModel):
    instances: list[Instance] = Field(min_length=1, max_length=MAX_INSTANCES)


async def score_request(request: Request) -> ScoreRequest:
    """The body read as JSON whatever type it declares, as TF Serving reads it."""
    try:
        return ScoreRequest.model_validate_json(await request.body())
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        raise RequestValidationError([problem | {"loc": ("body", *problem["loc"])} for problem in problems]) from None


ScoreRequestDep = Annotated[ScoreRequest, Depends(score_request)]
