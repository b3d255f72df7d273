"""Response-shape profiles: every profile's shapes on the list, read, write and error routes,
the '+' combination rule, per-OPCO selection (admin route, config file, CLI), strict by default."""
import json
import urllib.parse

import httpx
import pytest
import yaml

from cfa_opco.sandbox.profiles import PROFILES, parse_profile, profile_name
from cfa_opco.sandbox.testing import run_sandbox

from _sandbox_helpers import Api, uid

STRICT_ETATS_KEYS = {"total", "count", "page", "taillePage", "EtatDossierResult"}


@pytest.fixture(scope="module")
def ps():
    with run_sandbox(instant=True, rate_limit=0) as s, httpx.Client(trust_env=False, timeout=20) as http:
        a = Api(s, http, "atlas", "418936522")     # a SIREN of its own: exact etats totals
        made = [a.create()[0] for _ in range(7)]
        engaged = made[0]
        a.convention(engaged)                      # instant delays: ENGAGE now, with a schedule
        d = a.read(engaged["numeroInterne"])
        assert d["etat"] == "ENGAGE", d
        f = {"numeroInterneFacture": uid("F"), "referenceFactureCFA": uid("REF"),
             "numeroInterneDossier": engaged["numeroInterne"], "echeance": {"numero": 1},
             "montant": d["echeances"][0]["montant"], "dateFacture": "2026-09-15"}
        assert a.post("/v1/factures", json=f).status_code == 201
        # a: reads of the list SIREN (its etats hold exactly ``nis``); writes go through other SIRENs
        r = a.get("/v2/dossiers/etats", params={"taillePage": 100})
        nis = [x["numeroInterne"] for x in r.json()["EtatDossierResult"]]   # by last state change
        assert sorted(nis) == sorted(p["numeroInterne"] for p in made)
        yield s, http, a, nis, f


def writer(s, http, opco="atlas"):
    return Api(s, http, opco)


@pytest.fixture(autouse=True)
def _strict_again(ps):
    ps[0].set_profile(None, "strict")
    ps[0].clear_faults()
    ps[0].patch_settings(profile_options={"html_200_share": 0.0})   # tests that want it set it
    yield
    ps[0].set_profile(None, "strict")
    ps[0].clear_faults()
    ps[0].patch_settings(profile_options={"html_200_share": 0.02})


def test_names_and_combination_rule():
    assert PROFILES[0] == "strict" and set(PROFILES) == {
        "strict", "bare_lists", "wrapped_items_offset", "next_link", "renamed_fields", "text_errors",
        "html_gateway", "empty_bodies"}
    assert parse_profile("strict") == parse_profile(None) == parse_profile("") == frozenset()
    # order, case, blanks and repeats do not matter; strict is the empty combination
    assert parse_profile("html_gateway + BARE_LISTS") == parse_profile("bare_lists+html_gateway+bare_lists") \
        == parse_profile("strict+bare_lists+html_gateway") == {"bare_lists", "html_gateway"}
    assert profile_name(parse_profile("html_gateway+bare_lists")) == "bare_lists+html_gateway"
    assert profile_name(frozenset()) == "strict"
    with pytest.raises(ValueError, match="profil de réponse inconnu : 'bare_list'"):
        parse_profile("bare_list")
    with pytest.raises(ValueError, match="incompatibles.*wrapped_items_offset et next_link"):
        parse_profile("next_link+wrapped_items_offset")


def read_all_states(a, prof: str, size: int = 3) -> tuple[list[dict], int]:
    """Every etats item of the key's SIREN, paging in the profile's style; (items, requests)."""
    p = parse_profile(prof)
    items, n = [], 0
    if "next_link" in p:
        url, params = a.base + "/v2/dossiers/etats", {"taillePage": size}
        while url:
            r = a.http.get(url, params=params, headers=a.headers)
            n += 1
            assert r.status_code == 200, r.text
            body = r.json()
            if "bare_lists" in p:
                assert isinstance(body, list)
                items += body
                link = r.headers.get("link")
                url = link[1:link.index(">")] if link else None    # absolute URL
            else:
                assert set(body) == {"resultats", "suivant"}
                items += body["resultats"]
                # the body's link is relative; the Link header carries the same, absolute
                if body["suivant"]:
                    assert body["suivant"].startswith("/atlas/ApiEchangeCFA/v2/dossiers/etats?curseur=")
                    assert r.headers["link"] == f'<{a.server.base_url}{body["suivant"]}>; rel="next"'
                    url = a.server.base_url + body["suivant"]
                else:
                    assert "link" not in r.headers
                    url = None
            params = None
            assert n < 50
        return items, n
    offset_style = "wrapped_items_offset" in p
    k = 0
    while True:
        params = {"offset": k * size, "limit": size} if offset_style else {"numeroPage": k + 1, "taillePage": size}
        r = a.get("/v2/dossiers/etats", params=params)
        n += 1
        if r.status_code == 204:
            assert "empty_bodies" in p and r.content == b""
            break
        body = r.json()
        if "bare_lists" in p:
            assert isinstance(body, list) and r.headers["x-total-count"].isdigit()
            chunk = body
        elif offset_style:
            assert set(body) == {"items", "offset", "limit", "total"}
            num = str if "renamed_fields" in p else int
            assert body["offset"] == num(k * size) and body["limit"] == num(size)
            chunk = body["items"]
        else:
            assert set(body) == STRICT_ETATS_KEYS
            chunk = body["EtatDossierResult"]
        items += chunk
        if len(chunk) < size:
            break
        k += 1
        assert k < 50
    return items, n


COMBOS = [x for x in PROFILES if x != "strict"] + [
    "bare_lists+next_link", "bare_lists+wrapped_items_offset", "wrapped_items_offset+renamed_fields",
    "next_link+renamed_fields+empty_bodies", "bare_lists+html_gateway"]


@pytest.mark.parametrize("prof", COMBOS)
def test_every_profile_lists_the_same_states(ps, prof):
    """Whatever the shape and the pagination, the same dossiers in the same order."""
    s, http, a, nis, _ = ps
    strict, _ = read_all_states(a, "strict")
    assert [x["numeroInterne"] for x in strict] == nis
    s.set_profile("atlas", prof)
    items, requests = read_all_states(a, prof)
    key = "numeroDossier" if "renamed_fields" in parse_profile(prof) else "numeroInterne"
    assert [x[key] for x in items] == nis
    assert requests >= 3          # 7 dossiers by 3: it did page


def test_strict_is_the_default_and_unchanged(ps):
    s, http, a, nis, f = ps
    w = writer(s, http)
    view = s.profiles()
    assert view["profile"] == "strict" and set(view["opcos"].values()) == {"strict"}
    assert s.stats("atlas")["profile"] == "strict"
    r = a.get("/v1/dossiers/liste", params={"numerosInternes": f"{nis[0]},INCONNU-1"})
    assert r.headers["content-type"] == "application/json" and set(r.json()) == {"dossiers", "inconnus"}
    assert r.json()["inconnus"] == ["INCONNU-1"]
    assert set(r.json()["dossiers"][0]) == {"numeroInterne", "numeroExterne", "numeroDeca", "etat", "dateEtat",
                                             "motifs", "anomalies"}
    r = a.get("/v2/dossiers/etats", params={"numeroPage": 1})
    assert set(r.json()) == STRICT_ETATS_KEYS and r.json()["total"] == len(nis)
    assert "link" not in r.headers and "x-total-count" not in r.headers
    r = a.get("/v2/factures/etats")
    assert set(r.json()) == {"factures", "count"}
    r = a.get("/v2/dossiers", params={"numeroInterne": "INCONNU-1"})
    assert r.status_code == 404 and r.json()["erreurs"][0]["code"] == "DOSSIER_INCONNU"
    r = w.post("/v1/dossiers", json=w.dossier())
    assert r.status_code == 201 and r.json()["etat"] == "TRANSMIS"
    s.set_faults(error_503=1.0, error_429=0.0, methods=["GET"])
    r = a.get("/v1/status")
    assert r.status_code == 503 and r.json()["erreurs"][0]["code"] == "SERVICE_INDISPONIBLE"


def test_bare_lists(ps):
    s, http, a, nis, f = ps
    s.set_profile("atlas", "bare_lists")
    r = a.get("/v1/dossiers/liste", params={"numerosInternes": f"{nis[0]},{nis[1]},INCONNU-1"})
    assert r.status_code == 200 and [x["numeroInterne"] for x in r.json()] == nis[:2]   # unknown: absent
    r = a.get("/v2/dossiers/etats", params={"numeroPage": 2, "taillePage": 5})
    assert [x["numeroInterne"] for x in r.json()] == nis[5:] and r.headers["x-total-count"] == str(len(nis))
    r = a.get("/v2/factures/etats")
    assert isinstance(r.json(), list) and r.json()[0]["numeroInterneFacture"] == f["numeroInterneFacture"]
    # reads, writes and errors keep their strict shape
    assert a.get("/v2/dossiers", params={"numeroInterne": nis[1]}).json()["numeroInterne"] == nis[1]
    assert a.get("/v2/dossiers", params={"numeroInterne": "X-1"}).json()["erreurs"][0]["code"] == "DOSSIER_INCONNU"


def test_wrapped_items_offset(ps):
    s, http, a, nis, f = ps
    s.set_profile("atlas", "wrapped_items_offset")
    r = a.get("/v1/dossiers/liste", params={"numerosInternes": f"{nis[0]},INCONNU-1"})
    body = r.json()
    assert set(body) == {"data", "offset", "limit", "total", "inconnus"}
    assert [x["numeroInterne"] for x in body["data"]] == nis[:1] and body["inconnus"] == ["INCONNU-1"]
    r = a.get("/v2/dossiers/etats", params={"offset": 2, "limit": 3})
    assert r.json()["offset"] == 2 and r.json()["total"] == len(nis)
    assert [x["numeroInterne"] for x in r.json()["items"]] == nis[2:5]
    # numeroPage is not this server's parameter: ignored (a page-number client loops on page 1)
    r2 = a.get("/v2/dossiers/etats", params={"numeroPage": 2, "limit": 3})
    assert [x["numeroInterne"] for x in r2.json()["items"]] == nis[:3]
    r = a.get("/v2/factures/etats")
    assert set(r.json()) == {"resultats", "offset", "limit", "total"} and r.json()["total"] == 1
    r = a.get("/v2/factures/etats", params={"offset": 1})
    assert r.json()["resultats"] == [] and r.json()["total"] == 1
    r = a.get("/v2/dossiers/etats", params={"limit": 0})
    assert r.status_code == 400 and r.json()["erreurs"][0]["champ"] == "limit"


def test_next_link_cursor(ps):
    s, http, a, nis, f = ps
    s.set_profile("atlas", "next_link")
    r = a.get("/v1/dossiers/liste", params={"numerosInternes": nis[0]})
    assert r.json() == {"resultats": r.json()["resultats"], "suivant": None} and "link" not in r.headers
    r = a.get("/v2/factures/etats", params={"taillePage": 1})
    assert len(r.json()["resultats"]) == 1 and r.json()["suivant"] is None
    # the cursor freezes the window: a dossier created while paging is not slipped into it
    r = a.get("/v2/dossiers/etats", params={"taillePage": 4})
    first = [x["numeroInterne"] for x in r.json()["resultats"]]
    late = a.create()[0]["numeroInterne"]
    r = http.get(s.base_url + r.json()["suivant"], headers=a.headers)
    rest = [x["numeroInterne"] for x in r.json()["resultats"]]
    assert first + rest == nis and r.json()["suivant"] is None
    nis.append(late)                                     # the module's list SIREN now holds it too
    assert [x["numeroInterne"] for x in read_all_states(a, "next_link", size=100)[0]] == nis
    s.set_profile("atlas", "strict")
    r = a.get("/v2/dossiers/etats", params={"curseur": "pas-un-curseur"})
    assert r.status_code == 200       # strict ignores the parameter
    s.set_profile("atlas", "next_link")
    r = a.get("/v2/dossiers/etats", params={"curseur": "pas-un-curseur"})
    assert r.status_code == 400 and r.json()["erreurs"][0]["code"] == "CURSEUR_INVALIDE"
    assert "première page" in r.json()["erreurs"][0]["message"]


def test_renamed_fields(ps):
    s, http, a, nis, f = ps
    w = writer(s, http)
    s.set_profile("atlas", "renamed_fields")
    item = a.get("/v1/dossiers/liste", params={"numerosInternes": nis[1]}).json()["dossiers"][0]
    assert set(item) == {"numeroDossier", "numeroDossierOpco", "numeroDECA", "statut", "dateMaj", "motifsRefus",
                         "anomalies"}
    body = a.get("/v2/dossiers/etats", params={"taillePage": 2}).json()
    assert body["total"] == str(len(nis)) and body["count"] == "2" and body["page"] == "1"
    assert [x["numeroDossier"] for x in body["EtatDossierResult"]] == nis[:2]
    assert {x["statut"] for x in body["EtatDossierResult"]} == {"EN_COURS_INSTRUCTION"}
    engaged = f["numeroInterneDossier"]
    d = a.get("/v2/dossiers", params={"numeroInterne": engaged}).json()
    assert d["numeroDossier"] == engaged and "numeroInterne" not in d and d["statut"] == "ENGAGE"
    assert isinstance(d["engagement"]["montantTotal"], str) and float(d["engagement"]["montantTotal"]) > 0
    e = d["echeances"][0]
    assert e["numero"] == "1" and isinstance(e["montant"], str) and e["montant"].count(".") == 1
    assert {"statut", "date"} == set(d["historique"][0])
    assert d["contrat"]["dateDebutContrat"]     # the CERFA payload itself is not renamed
    fe = a.get("/v2/factures/etats").json()["factures"][0]
    assert fe["numeroFacture"] == f["numeroInterneFacture"] and fe["statutFacture"] in ("EN_COURS", "REGLE")
    assert fe["montant"] == f"{f['montant']:.2f}" and isinstance(fe["dossiers"][0]["montant"], str)
    r = w.post("/v1/dossiers", json=w.dossier())   # requests keep the norm's names
    assert r.status_code == 201 and r.json()["statut"] == "TRANSMIS" and "numeroDossier" in r.json()
    r = a.get("/v2/dossiers", params={"numeroInterne": "X-1"})
    assert r.json()["erreurs"][0]["code"] == "DOSSIER_INCONNU"     # errors unchanged


def test_text_errors(ps):
    s, http, a, nis, f = ps
    w = writer(s, http)
    s.set_profile("atlas", "text_errors")
    r = a.get("/v2/dossiers", params={"numeroInterne": "X-1"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")
    assert r.text == "Erreur 404 : [DOSSIER_INCONNU] numeroInterne : dossier X-1 inconnu pour ce SIREN\n"
    bad = w.dossier()
    bad["contrat"]["dateDebutContrat"] = "2026-02-31"
    r = w.post("/v1/dossiers", json=bad)
    assert r.status_code == 422 and r.text.startswith("Erreur 422 : [") and "contrat.dateDebutContrat" in r.text
    r = a.get("/v1/status", headers={"EDITEUR": "x", "LOGICIEL": "y", "VERSION": "1"})
    assert r.status_code == 401 and "X-API-KEY" in r.text
    s.set_faults(error_503=1.0, methods=["GET"])
    r = a.get("/v1/status")
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.text.startswith("Erreur 503 :")
    s.clear_faults()
    assert a.get("/v1/status").json()["status"] == "OK"            # successes stay JSON


@pytest.mark.parametrize("status", [502, 503, 504])
def test_html_gateway_pages(ps, status):
    s, http, a, nis, f = ps
    s.set_profile("atlas", "html_gateway")
    s.patch_settings(profile_options={"html_200_share": 0.0})
    s.set_faults(**{f"error_{status}": 1.0})
    r = a.get("/v2/dossiers", params={"numeroInterne": nis[0]})
    assert r.status_code == status and r.headers["content-type"].startswith("text/html")
    assert f"<h1>{status} " in r.text and "nginx" in r.text
    s.set_faults(error_429=1.0)
    r = a.get("/v1/status")                                           # not a gateway status: JSON
    assert r.status_code == 429 and r.json()["erreurs"][0]["code"] == "TROP_DE_REQUETES"


def test_html_gateway_200_page_on_reads_only(ps):
    s, http, a, nis, f = ps
    w = writer(s, http)
    s.set_profile("atlas", "html_gateway")
    s.patch_settings(profile_options={"html_200_share": 1.0})
    before = s.stats("atlas")["html_200_pages"]
    r = a.get("/v1/dossiers/liste", params={"numerosInternes": nis[0]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "maintenance" in r.text
    p = w.dossier()
    r = w.post("/v1/dossiers", json=p)                                 # writes are never replaced
    assert r.status_code == 201 and r.json()["numeroInterne"] == p["numeroInterne"]
    assert s.stats("atlas")["html_200_pages"] == before + 1
    # other OPCOs keep the strict profile
    b = Api(s, http, "opcommerce")
    assert b.get("/v1/status").json()["status"] == "OK"


def test_empty_bodies(ps):
    s, http, a, nis, f = ps
    w = writer(s, http)
    s.set_profile("atlas", "empty_bodies")
    p = w.dossier()
    r = w.post("/v1/dossiers", json=p)
    assert r.status_code == 202 and r.content == b""
    assert w.read(p["numeroInterne"])["numeroInterne"] == p["numeroInterne"]    # read back: it is there
    r = w.post("/v1/dossiers", json=p)                                            # idempotent replay
    assert r.status_code == 204 and r.content == b""
    assert s.creations("atlas")["creations"][p["numeroInterne"]] == 1
    r = w.post("/v1/conventions", json={
        "numeroInterneDossier": p["numeroInterne"], "employeur": {"siret": p["employeur"]["siret"]},
        "dateDebut": p["formation"]["dateDebutFormation"], "dateFin": p["formation"]["dateFinFormation"],
        "dureeFormation": p["formation"]["dureeFormation"], "rncp": p["formation"]["rncp"],
        "couts": {"coutPedagogique": 7900.0}})
    assert r.status_code == 201 and r.content == b""
    r = a.get("/v2/dossiers", params={"numeroInterne": "X-1"})
    assert r.status_code == 404 and r.content == b""
    r = w.post("/v1/dossiers", json=dict(w.dossier(), contrat=None))           # a payload error keeps its body
    assert r.status_code == 422 and r.json()["erreurs"]
    r = a.get("/v1/dossiers/liste", params={"numerosInternes": "INCONNU-1"})  # an empty list: 204
    assert r.status_code == 204 and r.content == b""
    r = a.get("/v2/dossiers/etats", params={"dateDebut": "2001-01-01", "dateFin": "2001-01-02"})
    assert r.status_code == 204 and r.content == b""
    s.set_faults(error_429=1.0)
    r = a.get("/v1/status")
    assert r.status_code == 429 and r.content == b"" and r.headers["retry-after"] == "1"


def test_combination_and_precedence(ps):
    s, http, a, nis, f = ps
    w = writer(s, http)
    s.set_profile("atlas", "html_gateway+text_errors+empty_bodies+bare_lists")
    s.patch_settings(profile_options={"html_200_share": 0.0})
    assert s.profiles()["opcos"]["atlas"] == "bare_lists+text_errors+html_gateway+empty_bodies"
    assert isinstance(a.get("/v1/dossiers/liste", params={"numerosInternes": nis[0]}).json(), list)
    r = a.get("/v2/dossiers", params={"numeroInterne": "X-1"})
    assert r.status_code == 404 and r.content == b""                           # empty beats text
    r = w.post("/v1/dossiers", json=dict(w.dossier(), contrat=None))
    assert r.status_code == 422 and r.text.startswith("Erreur 422 :")            # text for the others
    s.set_faults(error_503=1.0)
    r = a.get("/v1/status")
    assert r.status_code == 503 and "<h1>503 " in r.text                       # gateway beats empty


def test_per_opco_selection_admin_routes(ps):
    s, http, a, nis, f = ps
    s.set_profile("atlas", "bare_lists")
    s.set_profile("akto", "text_errors+renamed_fields")
    v = s.profiles()["opcos"]
    assert v["atlas"] == "bare_lists" and v["akto"] == "renamed_fields+text_errors"
    assert {v[o] for o in v if o not in ("atlas", "akto")} == {"strict"}
    k = Api(s, http, "akto")
    assert k.get("/v2/dossiers", params={"numeroInterne": "X-1"}).text.startswith("Erreur 404 :")
    assert "numeroDossier" in k.get("/v1/dossiers/liste", params={"numerosInternes": k.create()[0]["numeroInterne"]}
                                    ).json()["dossiers"][0]
    o = Api(s, http, "opcommerce")
    assert set(o.get("/v2/dossiers/etats").json()) == STRICT_ETATS_KEYS
    # one OPCO back to the global profile
    s.set_profile("akto", None)
    assert s.profiles()["opcos"]["akto"] == "strict"
    # a global profile applies to every OPCO and clears the per-OPCO ones
    s.set_profile(None, "wrapped_items_offset")
    v = s.profiles()
    assert v["profile"] == "wrapped_items_offset" and set(v["opcos"].values()) == {"wrapped_items_offset"}
    s.set_profile("atlas", "next_link")
    assert s.profiles()["opcos"]["atlas"] == "next_link" and s.profiles()["opcos"]["akto"] == "wrapped_items_offset"
    # the reset goes back to the file's profiles
    r = http.put(s.base_url + "/_sandbox/profiles/atlas", json={"profile": "bare_lists+nope"})
    assert r.status_code == 400 and r.json()["erreurs"][0]["code"] == "PROFIL_INVALIDE"
    assert "profil de réponse inconnu : 'nope'" in r.json()["erreurs"][0]["message"]
    r = http.put(s.base_url + "/_sandbox/profiles", json={"profile": "next_link+wrapped_items_offset"})
    assert r.status_code == 400 and "incompatibles" in r.json()["erreurs"][0]["message"]
    r = http.put(s.base_url + "/_sandbox/profiles", json={"profile": "strict", "opcos": {"atlas": "bare_lists"}})
    assert r.json()["opcos"]["atlas"] == "bare_lists" and r.json()["opcos"]["akto"] == "strict"
    r = http.patch(s.base_url + "/_sandbox/settings", json={"profile": "inconnu"})
    assert r.status_code == 400 and s.profiles()["profile"] == "strict"         # nothing half-applied
    # the OAuth2 token route is not the norm's: strict whatever the profile
    s.set_profile("akto", "text_errors")
    r = http.post(s.token_url("akto"), data={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_profile_from_config_file_and_cli(tmp_path):
    cfg = tmp_path / "sandbox.yaml"
    from cfa_opco.sandbox.__main__ import DEFAULT_CONFIG
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert data["profile"] == "strict"                       # the shipped file: strict
    data["profile"] = "bare_lists"
    data["opcos"] = {"akto": {"profile": "text_errors+empty_bodies"}}
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    with run_sandbox(config=cfg, instant=True, rate_limit=0) as s:
        v = s.profiles()
        assert v["profile"] == "bare_lists" and v["opcos"]["akto"] == "text_errors+empty_bodies"
        assert v["opcos"]["atlas"] == "bare_lists"
        s.reset()                                    # back to the file's, not to strict
        assert s.profiles()["opcos"]["akto"] == "text_errors+empty_bodies"
    # --profile: every OPCO (the file's per-OPCO profiles are replaced)
    with run_sandbox(config=cfg, instant=True, rate_limit=0, args=["--profile", "next_link+html_gateway"]) as s:
        assert set(s.profiles()["opcos"].values()) == {"next_link+html_gateway"}
    with pytest.raises(RuntimeError, match="profil de réponse inconnu : 'bare'"):
        with run_sandbox(instant=True, rate_limit=0, args=["--profile", "bare"]):
            pass
    with pytest.raises(RuntimeError, match="profil de réponse inconnu"):
        with run_sandbox(instant=True, overrides={"opcos": {"atlas": {"profile": "xml"}}}):
            pass


def test_link_and_suivant_are_followable_urls(ps):
    """The next link keeps the OPCO's path and only carries the cursor."""
    s, http, a, nis, f = ps
    s.set_profile("atlas", "next_link")
    r = a.get("/v2/dossiers/etats", params={"taillePage": 2, "dateDebut": "2001-01-01"})
    u = urllib.parse.urlsplit(r.json()["suivant"])
    assert u.path == "/atlas/ApiEchangeCFA/v2/dossiers/etats" and set(urllib.parse.parse_qs(u.query)) == {"curseur"}
    assert not json.dumps(r.json()).count("numeroPage")


def engaged_on(s, http, opco):
    w = Api(s, http, opco)
    p, _ = w.create()
    w.convention(p)
    assert w.read(p["numeroInterne"])["etat"] == "ENGAGE"
    return w, p


@pytest.mark.parametrize("prof", ["renamed_fields", "empty_bodies", "renamed_fields+empty_bodies"])
def test_write_routes_on_an_oauth_v2_opco(ps, prof):
    """AKTO (OAuth2 on v2): v2 creation, documents, invoice and its replay, rupture."""
    s, http, *_ = ps
    w, p = engaged_on(s, http, "akto")
    s.set_profile("akto", prof)
    empty, renamed = "empty_bodies" in prof, "renamed_fields" in prof
    ni = p["numeroInterne"]
    p2 = w.dossier()
    r = w.post("/v2/dossiers", json=p2)
    assert r.status_code == (202 if empty else 201)
    assert r.content == b"" if empty else r.json()["numeroDossier" if renamed else "numeroInterne"] == p2["numeroInterne"]
    r = w.post("/v1/documents", data={"typeFichier": "CERFA_SIGNE",
                                      "objets": json.dumps([{"typeObjet": "DOSSIER", "idObjet": ni}])},
               files={"fichier": ("cerfa.pdf", b"%PDF-1.4 fake", "application/pdf")})
    assert r.status_code == 201 and (r.content == b"" if empty else r.json()["idDocument"].startswith("DOC-"))
    d = w.get("/v2/dossiers", params={"numeroInterne": ni}).json()
    e = d["echeances"][0]
    fact = {"numeroInterneFacture": uid("F"), "referenceFactureCFA": uid("REF"), "numeroInterneDossier": ni,
            "echeance": {"numero": 1}, "montant": float(e["montant"]), "dateFacture": "2026-09-15"}
    r = w.post("/v1/factures", json=fact)
    assert r.status_code == 201
    if empty:
        assert r.content == b""
    elif renamed:
        assert r.json() == {"numeroFacture": fact["numeroInterneFacture"], "statutFacture": "EN_COURS"}
    r = w.post("/v1/factures", json=fact)                       # replay
    assert r.status_code == (204 if empty else 200)
    r = w.post("/v2/dossiers/rupture/employeur", json={"numeroInterne": ni, "dateRupture": "2027-03-15",
                                                        "motif": "Rupture d'un commun accord"})
    assert r.status_code == (204 if empty else 200)
    if not empty:
        assert r.json()["statut"] == "RUPTU" and r.json()["numeroDossier"] == ni
    got = w.get("/v2/dossiers", params={"numeroInterne": ni}).json()          # state moved all the same
    assert got["statut" if renamed else "etat"] == "RUPTU"
