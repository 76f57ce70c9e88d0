"""Document keys of job state and change markers in the state collection."""

from graphsvc.store.arango.state import marker_document_key, state_document_key


def test_state_and_marker_document_keys_never_collide():
    assert state_document_key("restore.products") == "k:restore.products"
    hashed = state_document_key("restore/products in dump 2")
    assert hashed.startswith("h:") and len(hashed) == 66
    assert state_document_key('x" || true || "') != state_document_key("' OR 1=1 --")
    assert marker_document_key("products") == "m:products"
