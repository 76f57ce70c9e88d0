"""schemathesis generates requests from the served OpenAPI schema — valid and invalid
ones, for unknown collections and for the served one — against the app over a real store
and index: no request may get a 5xx, and every answer must match the schema. A bounded
number of examples per operation and mode keeps it quick."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from graphsvc.service.app import ServiceConfig, create_app
from tests.service.conftest import make_catalogue

EXAMPLES = 25


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    catalogue = make_catalogue(tmp_path_factory.mktemp("fuzz"), n=300, dim=8)
    app = create_app(ServiceConfig(index_dir=str(catalogue.index_dir), store=str(catalogue.store)),
                     start_reloader=False)
    app.state.reloader.check()
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _fixed_path(operation) -> dict:
    names = {p.name for p in operation.path_parameters}
    fixed = {"collection": "products"} if "collection" in names else {}
    if "key" in names:
        fixed["key"] = "P00001"
    return fixed


@pytest.mark.parametrize("mode, served_collection", [
    (GenerationMode.POSITIVE, False), (GenerationMode.POSITIVE, True), (GenerationMode.NEGATIVE, True),
])
def test_no_generated_request_gets_a_server_error(api_schema, mode, served_collection):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    calls = []
    for operation in operations:
        path = _fixed_path(operation) if served_collection else None
        if served_collection and not path and mode is GenerationMode.NEGATIVE:
            continue

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path or None))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
            calls.append((operation.label, response.status_code))  # noqa: B023 - run() is called in this iteration

        run()
    statuses = {status for _, status in calls}
    assert all(status < 500 for status in statuses)
    if served_collection and mode is GenerationMode.POSITIVE:
        assert 200 in statuses  # the generated requests reached the index, not only the error paths
