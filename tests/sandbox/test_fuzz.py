"""Never a 500 for bad input: schemathesis over /openapi.json plus a raw hypothesis fuzz
(malformed JSON, wrong types, huge values, bad query params, unicode). Bounded in time."""
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from cfa_opco.sandbox import sample_dossier
from cfa_opco.sandbox.config import OPCO_CODES
from cfa_opco.sandbox.testing import demo_headers


@pytest.fixture(scope="session")
def akto_token(sbx, http):
    r = http.post(sbx.token_url("akto"), data={"grant_type": "client_credentials", "client_id": "cfa-opco-connector",
                                               "client_secret": "demo-akto-secret"})
    return r.json()["access_token"]


def test_schemathesis_no_server_error(sbx, akto_token):
    """Every operation of /openapi.json, schemathesis-generated cases (valid headers added)."""
    schema = schemathesis.openapi.from_url(sbx.base_url + "/openapi.json")
    ops = [res.ok() for res in schema.get_all_operations()]
    assert len(ops) >= 14
    for op, mode in [(op, mode) for op in ops
                     for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)]:
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy(mode))
        def run(case):
            opco = case.path_parameters.get("opco") if case.path_parameters else None
            if opco in OPCO_CODES:
                h = demo_headers(opco, Authorization="Bearer " + akto_token)
                case.headers = {**(case.headers or {}), **h}
            case.call_and_validate(checks=[not_a_server_error], timeout=10)
        run()


ROUTES = [("POST", "/v1/dossiers"), ("POST", "/v2/dossiers"), ("POST", "/v1/conventions"),
          ("POST", "/v1/factures"), ("POST", "/v2/certificats"), ("POST", "/v2/dossiers/rupture/employeur"),
          ("POST", "/v1/documents"), ("GET", "/v2/dossiers"), ("GET", "/v1/dossiers/liste"),
          ("GET", "/v2/dossiers/etats"), ("GET", "/v2/factures/etats"), ("GET", "/v2/cfakeyinfo")]
QUERY_NAMES = ["numeroInterne", "numerosInternes", "numeroPage", "taillePage", "dateDebut", "dateFin",
               "numeroInterneFacture", "siren"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10 ** 40), max_value=10 ** 40)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


def mutate(base: dict, path: list, value):
    obj = base
    for k in path[:-1]:
        obj = obj.get(k) if isinstance(obj, dict) else None
        if not isinstance(obj, dict):
            return base
    if isinstance(obj, dict):
        obj[path[-1]] = value
    return base


FIELD_PATHS = [["numeroInterne"], ["employeur", "siret"], ["employeur", "codeIdcc"], ["apprenti", "dateNaissance"],
               ["apprenti", "nom"], ["contrat", "typeContratApp"], ["contrat", "dateDebutContrat"],
               ["contrat", "remunerationsAnnuelles"], ["formation", "dureeFormation"], ["organismeFormation"],
               ["contrat", "numeroContratPrecedent"], ["maitre2"], ["contrat", "salaireEmbauche"]]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), opco=st.sampled_from(OPCO_CODES),
       body=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                      st.tuples(st.sampled_from(FIELD_PATHS), json_values).map(
                          lambda t: json.dumps(mutate(sample_dossier("atlas", numero_interne="FUZZ"), *t)).encode()),
                      st.just(b'{"a":' * 5000), st.just(b'{"numeroInterne": "\\ud800"}')),
       query=st.dictionaries(st.sampled_from(QUERY_NAMES), st.text(max_size=40), max_size=3),
       ctype=st.sampled_from(["application/json", "multipart/form-data; boundary=xyz", "text/plain",
                              "application/x-www-form-urlencoded"]),
       header_noise=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
def test_raw_fuzz_no_server_error(sbx, http, akto_token, route, opco, body, query, ctype, header_noise):
    method, path = route
    h = demo_headers(opco, Authorization="Bearer " + akto_token, LOGICIEL=header_noise.strip() or "x")
    h["content-type"] = ctype
    r = http.request(method, sbx.api(opco) + path, params=query, headers=h,
                     content=body if method == "POST" else None)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert "erreurs" in r.json()
