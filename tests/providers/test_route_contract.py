"""Contract between the client and the sandbox: the sandbox serves exactly the routes the
client's table (norm.ROUTES) names, with the same method, path and route id, and every
OPCO's capabilities name only routes of that table."""
from __future__ import annotations

from cfa_opco.providers.opco.capabilities import Capabilities
from cfa_opco.providers.opco.norm import OPCO_CODES, ROUTES
from cfa_opco.sandbox.app import create_app
from cfa_opco.sandbox.faults import API_ROUTES

PREFIX = "/{opco}/ApiEchangeCFA"


def served_routes() -> dict[str, tuple[str, str]]:
    app, _ = create_app(db_path=":memory:")
    asgi = app
    while not hasattr(asgi, "routes"):      # unwrap the fault layer around the FastAPI app
        asgi = asgi.app
    out = {}
    for r in asgi.routes:
        path = getattr(r, "path", "")
        if path.startswith(PREFIX):
            (method,) = sorted(r.methods)
            out[r.operation_id] = (method, path[len(PREFIX):])
    return out


def test_the_sandbox_serves_exactly_the_clients_routes():
    client = {rid: (r.method, r.path) for rid, r in ROUTES.items()}
    assert served_routes() == client


def test_the_sandbox_fault_layer_knows_the_same_routes():
    assert API_ROUTES == {(r.method, r.path.lstrip("/")): rid for rid, r in ROUTES.items()}


def test_capabilities_name_only_routes_of_the_table():
    for code in OPCO_CODES:
        assert set(Capabilities.for_opco(code).routes) <= set(ROUTES), code
