"""Every ArangoStub request checked against ArangoDB's published API, in every test of this
folder: a violation the store swallowed still fails the test that caused it."""

import pytest

from tests.store.arango.harness import ArangoStub, schema_name


@pytest.fixture(autouse=True)
def requests_conform_to_the_http_api():
    first = len(ArangoStub.instances)
    yield
    stubs = ArangoStub.instances[first:]
    problems = [p for stub in stubs for p in stub.violations]
    ArangoStub.tests_per_schema.update({schema_name(r) for stub in stubs for r in stub.requests} - {None})
    del ArangoStub.instances[first:]  # the stubs' requests are not needed past their test
    assert not problems, "requests departing from ArangoDB's HTTP API:\n  " + "\n  ".join(problems)
