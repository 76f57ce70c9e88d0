"""The shapes of the HTTP API's requests and answers (what /openapi.json documents and
the request models check, so that a bad field is a 400 naming it), its limits, and the
two ways it answers: a JSON body, or an error body `{"error": message}`."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

from fastapi import Path as PathParam
from fastapi import Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from graphsvc.service.queries import MAX_FIELDS, MAX_K

MAX_BATCH = 256
MAX_DIM = 4096
MAX_TEXT = 10_000
COLLECTION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-.]*$"

Collection = Annotated[str, PathParam(pattern=COLLECTION_PATTERN, max_length=256)]
DocumentKey = Annotated[str, PathParam(min_length=1, max_length=254)]
KQuery = Annotated[int, Query(ge=1, le=MAX_K)]
FieldsQuery = Annotated[Optional[str], Query(max_length=4096, description="Comma-separated attributes")]
FilterQuery = Annotated[Optional[str], Query(max_length=16_384, description="Structured filter as JSON")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
K = Annotated[int, Field(ge=1, le=MAX_K, description="How many hits (at most 1000).")]
FieldNames = Annotated[Optional[list[Annotated[str, Field(min_length=1, max_length=256)]]],
                       Field(max_length=MAX_FIELDS, description="Document attributes to return with each hit.")]
Filter = Annotated[Optional[dict[str, Any]], Field(
    description='Structured filter, e.g. {"category": {"in": ["Books"]}, "price": {"lt": 20}}; '
                "operators eq, ne, lt, lte, gt, gte, in.")]


class Hit(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    key: str = Field(alias="_key")
    score: float


class Answer(BaseModel):
    collection: str
    index_version: int
    query: dict[str, Any]
    hits: list[Hit]


class Recommendation(BaseModel):
    collection: str = Field(description="The users collection.")
    key: str = Field(description="The user's key.")
    movies: str = Field(description="The collection the hits are documents of.")
    index_version: int
    source: str = Field(description='"model", or "popular" for a user without ratings the model knows.')
    query: dict[str, Any]
    hits: list[Hit]
    note: Optional[str] = None


class BatchResult(BaseModel):
    key: Optional[str] = None
    hits: Optional[list[Hit]] = None
    error: Optional[dict[str, Any]] = None


class BatchAnswer(BaseModel):
    collection: str
    index_version: int
    k: int
    results: list[BatchResult]


class ErrorBody(BaseModel):
    error: str


class SimilarBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[Annotated[str, Field(min_length=1, max_length=254)]] = Field(min_length=1, max_length=MAX_BATCH)
    k: K = 10
    fields: FieldNames = None
    filter: Filter = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vector: Optional[list[Finite]] = Field(None, min_length=1, max_length=MAX_DIM)
    text: Optional[str] = Field(None, min_length=1, max_length=MAX_TEXT)
    k: K = 10
    fields: FieldNames = None
    filter: Filter = None


class SearchBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vectors: Optional[list[Annotated[list[Finite], Field(min_length=1, max_length=MAX_DIM)]]] = Field(
        None, min_length=1, max_length=MAX_BATCH)
    texts: Optional[list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]]] = Field(
        None, min_length=1, max_length=MAX_BATCH)
    k: K = 10
    fields: FieldNames = None
    filter: Filter = None


ERRORS = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
          413: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json",
                    headers=headers)


def error_response(status: int, message: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else ({"WWW-Authenticate": "Bearer"} if status == 401 else None)
    return json_response({"error": message}, status, headers)
