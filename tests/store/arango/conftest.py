"""Every ArangoStub request checked against ArangoDB's published API, in every test of this
folder: a violation the store swallowed still fails the test that caused it."""

import pytest

from tests.store.arango.harness import ArangoStub


@pytest.fixture(autouse=True)
def requests_conform_to_the_http_api():
    first = len(ArangoStub.instances)
    yield
    problems = [p for stub in ArangoStub.instances[first:] for p in stub.violations]
    del ArangoStub.instances[first:]  # the stubs' requests are not needed past their test
    assert not problems, "requests departing from ArangoDB's HTTP API:\n  " + "\n  ".join(problems)
