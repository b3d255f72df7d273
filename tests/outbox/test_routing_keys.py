"""Key governance (issue 14, part 3): a key per establishment (SIRET) or per company (SIREN).
Routing takes the SIRET's key when its connection exists, else the SIREN's, and says which;
the plan records the scope and batches per connection; the sandbox refuses a SIRET key
sending another establishment's dossier."""
from __future__ import annotations

import json

import httpx

from cfa_opco.providers.opco.norm import conn_id_for, key_scope_of, parse_conn_id
from cfa_opco.routing import NEEDS_HUMAN, ROUTED, SCOPE_SIREN, SCOPE_SIRET, Router

SIRET_VILLEURBANNE = "77567227200025"     # the demo's Atlas SIRET key (config/sandbox.yaml)
SIRET_GERLAND = "77567227200017"          # same SIREN, no key of its own


def _atlas_idcc() -> str:
    from cfa_opco.routing import idcc_to_opco

    return next(i for i, o in sorted(idcc_to_opco().items()) if o == "atlas")


def test_conn_id_naming_and_scope():
    assert conn_id_for("ATLAS", SIRET_VILLEURBANNE) == "opco_atlas_77567227200025"
    assert parse_conn_id("opco_opco_2i_77567227200025") == ("opco_2i", SIRET_VILLEURBANNE)
    assert key_scope_of("opco_atlas_77567227200025") == "SIRET"
    assert key_scope_of("opco_atlas_775672272") == "SIREN"
    assert key_scope_of("cfa_connector") is None


def test_siret_key_first_then_siren_key_and_route_says_which():
    idcc = _atlas_idcc()
    both = {"opco_atlas_775672272", f"opco_atlas_{SIRET_VILLEURBANNE}"}
    router = Router(connection_exists=both.__contains__)
    own = router.route(idcc, SIRET_VILLEURBANNE)
    assert (own.decision, own.conn_id, own.key_scope, own.cfa_siren) == (
        ROUTED, f"opco_atlas_{SIRET_VILLEURBANNE}", SCOPE_SIRET, "775672272")
    other = router.route(idcc, SIRET_GERLAND)      # same company, no key of its own
    assert (other.decision, other.conn_id, other.key_scope) == (ROUTED, "opco_atlas_775672272", SCOPE_SIREN)
    only_siret = Router(connection_exists={f"opco_atlas_{SIRET_VILLEURBANNE}"}.__contains__)
    none = only_siret.route(idcc, SIRET_GERLAND)
    assert none.decision == NEEDS_HUMAN and none.key_scope is None
    assert SIRET_GERLAND in none.reason and "775672272" in none.reason and "opco_atlas_775672272" in none.reason


def test_plan_records_scope_and_batches_per_connection(staged):
    """A real run of the demo ERPs routed with the committed connections (one Atlas SIRET key):
    the Villeurbanne site's Atlas dossiers form their own batch, with scope SIRET."""
    from cfa_opco.outbox import plan
    from cfa_opco.outbox.planning import planned_batches
    from tests.helpers import rows
    from tests.outbox.common import RUN

    planned = plan(RUN, staged["connector"])
    atlas = {b["conn_id"]: b for b in planned["batches"]["atlas"]}
    siret_conn = f"opco_atlas_{SIRET_VILLEURBANNE}"
    assert siret_conn in atlas and atlas[siret_conn]["key_scope"] == "SIRET"
    assert atlas["opco_atlas_775672272"]["key_scope"] == "SIREN"
    assert {b["conn_id"] for b in planned_batches(RUN, staged["connector"], "atlas")} == set(atlas)
    scopes = dict(rows(staged["connector"], """SELECT s.cfa_siret, string_agg(DISTINCT p.conn_id, ',')
                                             FROM transmission_plan p JOIN staged_dossier s USING (run_id, source_id, numero_interne)
                                             WHERE p.opco_code = 'atlas' AND p.decision = 'ROUTED'
                                               AND s.cfa_siret LIKE '775672272%%' GROUP BY 1"""))
    assert scopes[SIRET_VILLEURBANNE] == siret_conn
    assert all(c == "opco_atlas_775672272" for s, c in scopes.items() if s != SIRET_VILLEURBANNE)
    bad = rows(staged["connector"], """SELECT count(*) FROM transmission_plan WHERE decision = 'ROUTED'
                                     AND key_scope IS DISTINCT FROM (CASE WHEN length(substring(conn_id from '_(\\d+)$')) = 14
                                                                      THEN 'SIRET' ELSE 'SIREN' END)""")
    assert bad[0][0] == 0


def test_sandbox_siret_key_sends_its_establishment_only(sandbox):
    from cfa_opco.sandbox import sample_dossier
    from cfa_opco.sandbox.testing import demo_headers

    key = f"demo-atlas-{SIRET_VILLEURBANNE}"
    headers = demo_headers("atlas", "775672272", key=key)
    with httpx.Client(trust_env=False, timeout=20) as http:
        own = sample_dossier("atlas", "775672272", "SIRET-OWN-1")
        own["organismeFormation"]["siret"] = SIRET_VILLEURBANNE
        r = http.post(sandbox.api("atlas") + "/v1/dossiers", headers=headers, content=json.dumps(own))
        assert r.status_code == 201, r.text
        other = sample_dossier("atlas", "775672272", "SIRET-OTHER-1")
        other["organismeFormation"]["siret"] = SIRET_GERLAND
        r = http.post(sandbox.api("atlas") + "/v1/dossiers", headers=headers, content=json.dumps(other))
        assert r.status_code == 403
        err = r.json()["erreurs"][0]
        assert err["code"] == "SIRET_DIFFERENT" and SIRET_VILLEURBANNE in err["message"] \
            and SIRET_GERLAND in err["message"] and key not in r.text
        info = http.get(sandbox.api("atlas") + "/v2/cfakeyinfo", params={"siren": "775672272"}, headers=headers)
        assert info.status_code == 200 and info.json()["status"] == "success"
