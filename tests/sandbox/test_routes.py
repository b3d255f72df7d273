"""Every route, auth/header errors, the capability table, validation, idempotency, reads."""
import json

import pytest
import yaml

from cfa_opco.sandbox.config import CAPABILITIES_FILE, OPCO_CODES
from cfa_opco.sandbox.testing import SOFTWARE_HEADERS, demo_headers

from _sandbox_helpers import SIREN, Api

CAPS = yaml.safe_load(open(CAPABILITIES_FILE))["opcos"]
ROUTES = {
    "status": ("GET", "/v1/status"), "cfakeyinfo": ("GET", "/v2/cfakeyinfo"),
    "dossiers_v1": ("POST", "/v1/dossiers"), "dossiers_v2": ("POST", "/v2/dossiers"),
    "dossier_read_v2": ("GET", "/v2/dossiers"), "liste_v1": ("GET", "/v1/dossiers/liste"),
    "etats_v2": ("GET", "/v2/dossiers/etats"), "documents_v1": ("POST", "/v1/documents"),
    "conventions_v1": ("POST", "/v1/conventions"), "certificats_v2": ("POST", "/v2/certificats"),
    "factures_v1": ("POST", "/v1/factures"), "factures_etats_v2": ("GET", "/v2/factures/etats"),
    "rupture_v2": ("POST", "/v2/dossiers/rupture/employeur"),
}


def assert_erreurs(r, status, code=None, champ=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["erreurs"], list) and body["erreurs"]
    for e in body["erreurs"]:
        assert set(e) == {"code", "champ", "message"}
    if code:
        assert code in [e["code"] for e in body["erreurs"]], body
    if champ:
        assert champ in [e["champ"] for e in body["erreurs"]], body
    return body["erreurs"]


def test_capability_table_every_opco_every_route(api):
    """Each OPCO x route kind: served routes never answer ROUTE_NON_SERVIE, others 404 with erreurs."""
    for opco in OPCO_CODES:
        a = api(opco)
        served = set(CAPS[opco]["routes"])
        for rid, (method, path) in ROUTES.items():
            r = a.http.request(method, a.base + path, headers=a.headers, json={} if method == "POST" else None)
            if rid in served:
                codes = [e["code"] for e in r.json().get("erreurs", [])] if r.status_code >= 400 else []
                assert "ROUTE_NON_SERVIE" not in codes, (opco, rid, r.text)
                assert r.status_code != 404 or rid in ("dossier_read_v2",), (opco, rid, r.text)
            else:
                assert_erreurs(r, 404, "ROUTE_NON_SERVIE")


def test_unknown_opco_and_unknown_path(api, http, sbx):
    r = http.get(sbx.base_url + "/nope/ApiEchangeCFA/v1/status", headers=demo_headers("akto"))
    assert_erreurs(r, 404)
    r = http.get(sbx.base_url + "/akto/ApiEchangeCFA/v9/whatever", headers=demo_headers("akto"))
    assert_erreurs(r, 404)
    r = http.delete(sbx.api("atlas") + "/v1/dossiers", headers=demo_headers("atlas"))
    assert_erreurs(r, 405)


def test_status(api):
    r = api("atlas").get("/v1/status")
    assert r.status_code == 200 and r.json()["status"] == "OK" and r.json()["opco"] == "atlas"


@pytest.mark.parametrize("missing", ["EDITEUR", "LOGICIEL", "VERSION"])
def test_missing_software_header_400(api, missing):
    a = api("atlas")
    h = {k: v for k, v in a.headers.items() if k != missing}
    errs = assert_erreurs(a.get("/v1/status", headers=h), 400, "ENTETE_MANQUANTE", missing)
    assert len(errs) == 1


def test_key_errors_401_403(api, http, sbx):
    a = api("atlas")
    h = dict(SOFTWARE_HEADERS)
    assert_erreurs(a.get("/v1/status", headers=h), 401, "CLE_ABSENTE")
    assert_erreurs(a.get("/v1/status", headers={**h, "X-API-KEY": "nope"}), 401, "CLE_INCONNUE")
    # a key of another OPCO is unknown here
    assert_erreurs(a.get("/v1/status", headers={**h, "X-API-KEY": "demo-akto-775672272"}), 401, "CLE_INCONNUE")
    # demo: AFDAS has no key for SIREN 324578137
    assert_erreurs(http.get(sbx.api("afdas") + "/v1/status", headers=demo_headers("afdas", "324578137")),
                   401, "CLE_INCONNUE")


def test_expired_key_403_says_date(sbx, http):
    sbx.patch_settings(keys=sbx.settings()["keys"] + [
        {"key": "old-atlas", "opco": "atlas", "siren": SIREN, "expires": "2020-01-31"}])
    try:
        r = http.get(sbx.api("atlas") + "/v1/status", headers=demo_headers("atlas", key="old-atlas"))
        errs = assert_erreurs(r, 403, "CLE_EXPIREE")
        assert "2020-01-31" in errs[0]["message"]
        r = http.get(sbx.api("atlas") + "/v2/cfakeyinfo", params={"siren": SIREN},
                     headers=demo_headers("atlas", key="old-atlas"))
        assert r.status_code == 200 and r.json()["status"] == "error"
        assert r.json()["dateFinValidite"] == "2020-01-31"
    finally:
        sbx.patch_settings(keys=[k for k in sbx.settings()["keys"] if k["key"] != "old-atlas"])


def test_cfakeyinfo(api, http, sbx):
    a = api("atlas")
    r = a.get("/v2/cfakeyinfo", params={"siren": SIREN})
    assert r.status_code == 200
    assert r.json() == {"status": "success", "dateFinValidite": "2031-12-31", "comment": r.json()["comment"]}
    r = a.get("/v2/cfakeyinfo", params={"siren": "324578137"})
    assert r.json()["status"] == "error" and "775672272" in r.json()["comment"]
    assert_erreurs(a.get("/v2/cfakeyinfo", params={"siren": "12"}), 400, champ="siren")
    assert_erreurs(a.get("/v2/cfakeyinfo"), 400, champ="siren")
    # the demo near-expiry key (constructys / 418936522): valid, few days left
    r = http.get(sbx.api("constructys") + "/v1/status", headers=demo_headers("constructys", "418936522"))
    assert r.status_code == 200
    exp = next(k for k in sbx.settings()["keys"] if k["key"] == "demo-constructys-418936522")
    assert exp.get("expires_in_days") is not None
    # constructys does not serve v2 cfakeyinfo in the table -> 404; a v2 OPCO answers it
    r = http.get(sbx.api("atlas") + "/v2/cfakeyinfo", params={"siren": "418936522"},
                 headers=demo_headers("atlas", "418936522"))
    assert r.json()["status"] == "success"


def test_create_and_idempotency(api, sbx):
    a = api("atlas")
    p, out = a.create()
    assert out["etat"] == "TRANSMIS" and len(out["numeroDeca"]) == 15
    assert set(out) == {"numeroInterne", "numeroExterne", "numeroDeca", "etat", "dateEtat"}
    # same content (key order differs) -> 200, same dossier
    same = json.loads(json.dumps(p, sort_keys=True))
    r = a.post("/v1/dossiers", json=same)
    assert r.status_code == 200 and r.json()["numeroExterne"] == out["numeroExterne"]
    # different content -> 409
    p2 = dict(p, maitre2={"nom": "Autre", "prenom": "Paul", "dateNaissance": "1980-01-01"})
    assert_erreurs(a.post("/v1/dossiers", json=p2), 409, "NUMERO_INTERNE_EXISTANT", "numeroInterne")
    c = sbx.creations("atlas")
    assert c["creations"][p["numeroInterne"]] == 1 and p["numeroInterne"] not in c["duplicates"]
    st = sbx.stats("atlas")
    assert st["duplicates_same_content"] >= 1 and st["conflicts_409"] >= 1


def test_v2_create_and_read(api):
    a = api("opcommerce")
    p, out = a.create(version="v2")
    d = a.read(p["numeroInterne"])
    assert d["numeroDeca"] == out["numeroDeca"] and d["apprenti"]["prenom"] == "Aïssata"
    assert d["etat"] == "EN_COURS_INSTRUCTION" and d["anomalies"][0]["piece"] == "CONVENTION_FORMATION"
    assert [h["etat"] for h in d["historique"]] == ["TRANSMIS", "EN_COURS_INSTRUCTION"]
    assert_erreurs(a.get("/v2/dossiers", params={"numeroInterne": "absent"}), 404, "DOSSIER_INCONNU")
    assert_erreurs(a.get("/v2/dossiers"), 400, champ="numeroInterne")


def test_siren_mismatch_403(api):
    a = api("atlas")
    p = a.dossier()
    p["organismeFormation"]["siret"] = "32457813700015" if False else __import__(
        "cfa_opco.sandbox").sandbox.siret_for("324578137")
    errs = assert_erreurs(a.post("/v1/dossiers", json=p), 403, "SIREN_DIFFERENT")
    assert "775672272" in errs[0]["message"] and "324578137" in errs[0]["message"]


def test_reads_limited_to_key_siren(api, http, sbx):
    a = api("atlas")
    p, _ = a.create()
    other = Api(sbx, http, "atlas", "324578137")
    assert other.get("/v2/dossiers", params={"numeroInterne": p["numeroInterne"]}).status_code == 404
    r = other.get("/v1/dossiers/liste", params={"numerosInternes": p["numeroInterne"]})
    assert r.json()["dossiers"] == [] and r.json()["inconnus"] == [p["numeroInterne"]]


VALIDATION_CASES = [
    ({"employeur.siret": "73282932000075"}, "employeur.siret"),
    ({"employeur.siret": "123"}, "employeur.siret"),
    ({"employeur.naf": "1071C"}, "employeur.naf"),
    ({"employeur.codeIdcc": "843"}, "employeur.codeIdcc"),
    ({"employeur.typeEmployeur": 99}, "employeur.typeEmployeur"),
    ({"apprenti.sexe": "X"}, "apprenti.sexe"),
    ({"apprenti.dateNaissance": "2007-02-30"}, "apprenti.dateNaissance"),
    ({"apprenti.nir": "ABC"}, "apprenti.nir"),
    ({"apprenti.nom": None}, "apprenti.nom"),
    ({"apprenti.adresse.codePostal": "6910"}, "apprenti.adresse.codePostal"),
    ({"contrat.typeContratApp": 99}, "contrat.typeContratApp"),
    ({"contrat.dateDebutContrat": "01/09/2026"}, "contrat.dateDebutContrat"),
    ({"contrat.dureeTravailHebdoHeures": "35"}, "contrat.dureeTravailHebdoHeures"),
    ({"contrat.remunerationsAnnuelles.0.typeSalaire": "EUR"}, "contrat.remunerationsAnnuelles.0.typeSalaire"),
    ({"formation.rncp": "RNCP1"}, "formation.rncp"),
    ({"formation.codeDiplome": "123"}, "formation.codeDiplome"),
    ({"organismeFormation.uaiCfa": "069345G"}, "organismeFormation.uaiCfa"),
    ({"organismeFormation.siret": "77567227200018"}, "organismeFormation.siret"),
    ({"maitre1": None}, "maitre1"),
]


@pytest.mark.parametrize("changes,champ", VALIDATION_CASES)
def test_validation_422_per_field(api, changes, champ):
    a = api("atlas")
    errs = assert_erreurs(a.post("/v1/dossiers", json=a.dossier(**changes)), 422, champ=champ)
    assert len(errs) == 1, errs


def test_validation_several_fields_and_la_poste(api):
    a = api("atlas")
    p = a.dossier(**{"apprenti.sexe": "Z", "formation.rncp": "X", "employeur.naf": "bad"})
    errs = assert_erreurs(a.post("/v1/dossiers", json=p), 422)
    assert {e["champ"] for e in errs} == {"apprenti.sexe", "formation.rncp", "employeur.naf"}
    # La Poste exception: SIREN 356000000, digit sum divisible by 5 (not Luhn)
    p = a.dossier(**{"employeur.siret": "35600000000010"})
    assert a.post("/v1/dossiers", json=p).status_code == 201


def test_bad_json_400_and_wrong_shape_422(api):
    a = api("atlas")
    r = a.http.post(a.base + "/v1/dossiers", headers={**a.headers, "content-type": "application/json"},
                    content=b"{not json")
    assert_erreurs(r, 400, "JSON_INVALIDE")
    assert_erreurs(a.post("/v1/dossiers", json=[1, 2]), 422)
    r = a.http.post(a.base + "/v1/dossiers", headers={**a.headers, "content-type": "application/json"},
                    content=b'{"numeroInterne": NaN}')
    assert_erreurs(r, 400)


def test_liste(api):
    a = api("atlas")
    p1, _ = a.create()
    p2, _ = a.create()
    r = a.get("/v1/dossiers/liste", params={"numerosInternes": f"{p1['numeroInterne']},{p2['numeroInterne']},zz"})
    assert r.status_code == 200
    assert [d["numeroInterne"] for d in r.json()["dossiers"]] == [p1["numeroInterne"], p2["numeroInterne"]]
    assert r.json()["inconnus"] == ["zz"]
    assert_erreurs(a.get("/v1/dossiers/liste", params={"numerosInternes": ",".join(["a"] * 101)}), 400)
    assert_erreurs(a.get("/v1/dossiers/liste"), 400)


def test_documents_multipart(api):
    a = api("atlas")
    p, _ = a.create()
    objets = json.dumps([{"typeObjet": "DOSSIER", "idObjet": p["numeroInterne"]}])
    r = a.post("/v1/documents", data={"typeFichier": "CERFA_SIGNE", "objets": objets},
               files={"fichier": ("cerfa.pdf", b"%PDF-1.4 fake", "application/pdf")})
    assert r.status_code == 201, r.text
    assert r.json()["typeFichier"] == "CERFA_SIGNE" and r.json()["idDocument"]
    assert a.read(p["numeroInterne"])["anomalies"]  # a CERFA does not complete the dossier
    r = a.post("/v1/documents", data={"typeFichier": "CONVENTION_FORMATION", "objets": objets},
               files={"fichier": ("conv.pdf", b"%PDF-1.4 conv", "application/pdf")})
    assert r.status_code == 201
    d = a.read(p["numeroInterne"])
    assert d["etat"] == "ENGAGE" and d["anomalies"] == []
    # errors
    assert_erreurs(a.post("/v1/documents", data={"typeFichier": "X", "objets": "[]"},
                          files={"fichier": ("a", b"x")}), 422, champ="typeFichier")
    assert_erreurs(a.post("/v1/documents", data={"typeFichier": "AUTRE", "objets": "nope"},
                          files={"fichier": ("a", b"x")}), 422, champ="objets")
    assert_erreurs(a.post("/v1/documents", data={"typeFichier": "AUTRE", "objets": objets}), 422, champ="fichier")
    unknown = json.dumps([{"typeObjet": "DOSSIER", "idObjet": "inconnu"}])
    assert_erreurs(a.post("/v1/documents", data={"typeFichier": "AUTRE", "objets": unknown},
                          files={"fichier": ("a", b"x")}), 404, "DOSSIER_INCONNU")
    assert_erreurs(a.post("/v1/documents", json={"a": 1}), 400)


def test_conventions_errors(api):
    a = api("atlas")
    p, _ = a.create()
    bad = dict(numeroInterneDossier=p["numeroInterne"], employeur={"siret": "123"}, dateDebut="x",
               dateFin="2028-01-01", dureeFormation=0, rncp="R", couts={})
    errs = assert_erreurs(a.post("/v1/conventions", json=bad), 422)
    assert {"employeur.siret", "dateDebut", "dureeFormation", "rncp", "couts.coutPedagogique"} <= {e["champ"] for e in errs}
    p2 = dict(p, numeroInterne="absent-conv")
    a.convention(p2, expect=404)
    r = a.post("/v1/conventions", json={"numeroInterneDossier": p["numeroInterne"], "employeur": {"siret": "77567227200017"},
                                        "dateDebut": "2026-09-07", "dateFin": "2028-06-30", "dureeFormation": 800,
                                        "rncp": "RNCP37125", "couts": {"coutPedagogique": 1.0}})
    assert_erreurs(r, 422, "SIRET_DIFFERENT")


def test_certificats_afdas_only(api):
    a = api("afdas")
    p, _ = a.create()
    body = {"numeroInterneDossier": p["numeroInterne"], "typeCertificat": "Intermediaire",
            "echeance": {"numero": 1, "codification": "E1", "duree": 400, "dateDebut": "2026-09-07",
                         "dateFin": "2027-06-30"}}
    r = a.post("/v2/certificats", json=body)
    assert r.status_code == 201 and r.json()["idCertificat"]
    assert_erreurs(a.post("/v2/certificats", json=dict(body, typeCertificat="Autre")), 422, champ="typeCertificat")
    assert_erreurs(a.post("/v2/certificats", json=dict(body, numeroInterneDossier="zz")), 404)
    assert_erreurs(api("atlas").post("/v2/certificats", json=body), 404, "ROUTE_NON_SERVIE")


def test_oauth2_akto(sbx, http):
    h = demo_headers("akto")
    url = sbx.api("akto")
    assert_erreurs(http.get(url + "/v2/dossiers/etats", headers=h), 401, "JETON_ABSENT")
    assert_erreurs(http.get(url + "/v2/dossiers/etats", headers={**h, "Authorization": "Bearer zz"}), 401, "JETON_INVALIDE")
    # v1 routes of AKTO need no token
    assert http.get(url + "/v1/status", headers=h).status_code == 200
    r = http.post(sbx.token_url("akto"), data={"grant_type": "password", "client_id": "cfa-opco-connector",
                                               "client_secret": "demo-akto-secret"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = http.post(sbx.token_url("akto"), data={"grant_type": "client_credentials", "client_id": "cfa-opco-connector",
                                               "client_secret": "wrong"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = http.post(sbx.token_url("akto"), data={"grant_type": "client_credentials"},
                  auth=("cfa-opco-connector", "demo-akto-secret"))  # HTTP Basic works too
    assert r.status_code == 200
    tok = r.json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 3600
    auth = {**h, "Authorization": "Bearer " + tok["access_token"]}
    assert http.get(url + "/v2/dossiers/etats", headers=auth).status_code == 200
    # other OPCOs have no token endpoint
    assert http.post(sbx.token_url("atlas"), data={"grant_type": "client_credentials"}).status_code == 404
    # expiry on the sandbox clock
    sbx.advance_clock(3601)
    try:
        assert_erreurs(http.get(url + "/v2/dossiers/etats", headers=auth), 401, "JETON_EXPIRE")
    finally:
        sbx.advance_clock(-3601)


def test_openapi_and_docs(sbx, http):
    r = http.get(sbx.base_url + "/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/{opco}/ApiEchangeCFA/v2/dossiers/etats" in paths
    assert not any(p.startswith("/_sandbox") for p in paths)
    assert http.get(sbx.base_url + "/docs").status_code == 200


def test_sandbox_introspection(sbx):
    h = sbx.health()
    assert h["status"] == "ok" and len(h["opcos"]) == 11
    st = sbx.stats()
    assert set(st) == set(OPCO_CODES)
    assert "200" in st["atlas"]["requests_by_status"]
    assert sbx.clock()["offset_seconds"] == 0
