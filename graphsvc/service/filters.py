"""Structured filters from HTTP and CLI clients → store `Condition`s.

A filter is a JSON object of attribute → constraint:

    {"category": "Books"}                          equality (shorthand for {"eq": "Books"})
    {"category": {"in": ["Books", "Music"]}}       membership
    {"price": {"gte": 5, "lt": 20}}                ranges (numbers or strings)
    {"brand": {"ne": "Acme"}}                      inequality (a missing attribute matches)

Values are data: the store binds them as parameters; no client text ever becomes query
text. Everything is checked here so that a bad filter is a 400 naming the attribute.
"""

from __future__ import annotations

import json
import math
from typing import Any

from graphsvc.service.errors import FilterError
from graphsvc.store.base import FILTER_OPERATORS, Condition

MAX_ATTRIBUTES = 16
MAX_IN_VALUES = 1000
MAX_NAME_LENGTH = 256
_RANGES = ("lt", "lte", "gt", "gte")


def _scalar(attribute: str, op: str, value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise FilterError(f"filter on '{attribute}': {op} needs a finite number, got {value}")
        return value
    if value is None:
        raise FilterError(f"filter on '{attribute}': null is not a filter value "
                          "(use 'ne' with a value to match missing ones)")
    raise FilterError(f"filter on '{attribute}': {op} takes a string, number or boolean, got {type(value).__name__}")


def filter_object(spec: Any) -> Any:
    """A filter given as JSON text (a query parameter, a CLI option) as an object."""
    if isinstance(spec, str):
        try:
            return json.loads(spec)
        except ValueError as exc:
            raise FilterError(f"filter is not valid JSON: {exc}") from None
    return spec


def parse_filter(spec: Any) -> list[Condition]:
    """Conditions for a filter object or its JSON text (None or {} → no conditions);
    FilterError naming the attribute otherwise."""
    spec = filter_object(spec)
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise FilterError('filter must be a JSON object like {"category": {"in": ["Books"]}, "price": {"lt": 20}}')
    if len(spec) > MAX_ATTRIBUTES:
        raise FilterError(f"filter has {len(spec)} attributes; at most {MAX_ATTRIBUTES} are allowed")
    conditions = []
    for attribute, constraint in spec.items():
        if not attribute or len(attribute) > MAX_NAME_LENGTH:
            raise FilterError(f"filter attribute names must have 1 to {MAX_NAME_LENGTH} characters")
        if not isinstance(constraint, dict):
            if isinstance(constraint, list):
                raise FilterError(f"filter on '{attribute}': write a list of values as {{\"in\": [...]}}")
            conditions.append(Condition(attribute, "eq", _scalar(attribute, "eq", constraint)))
            continue
        if not constraint:
            raise FilterError(f"filter on '{attribute}': empty constraint; use one of {', '.join(FILTER_OPERATORS)}")
        for op, value in constraint.items():
            if op not in FILTER_OPERATORS:
                raise FilterError(f"filter on '{attribute}': unknown operator '{op}' "
                                  f"(use {', '.join(FILTER_OPERATORS)})")
            if op == "in":
                if not isinstance(value, list):
                    raise FilterError(f"filter on '{attribute}': 'in' needs a list of values")
                if len(value) > MAX_IN_VALUES:
                    raise FilterError(f"filter on '{attribute}': 'in' takes at most {MAX_IN_VALUES} values")
                conditions.append(Condition(attribute, "in", tuple(_scalar(attribute, op, v) for v in value)))
                continue
            value = _scalar(attribute, op, value)
            if op in _RANGES and isinstance(value, bool):
                raise FilterError(f"filter on '{attribute}': {op} needs a number or a string, not a boolean")
            conditions.append(Condition(attribute, op, value))
    return conditions


def canonical(conditions: list[Condition]) -> str:
    """A stable text for a set of conditions (the key of the candidate cache)."""
    return "&".join(sorted(
        json.dumps([c.attribute, c.op, list(c.value) if isinstance(c.value, tuple) else c.value]) for c in conditions
    ))
