"""Instruction engine on the sandbox clock: states, refusals, incompleteness, amendments,
engagement and schedule, invoices, rupture, the etats window."""
import datetime as dt

import httpx
import pytest

from cfa_opco.sandbox.testing import run_sandbox

from _sandbox_helpers import Api, uid


@pytest.fixture(scope="module")
def slow():
    """Delays 5 s (instruction), 10 s (decision), 30 s (payment); tests move the clock."""
    with run_sandbox(rate_limit=0, overrides={"delays": {"instruction": 5, "decision": 10, "reglement": 30}}) as s, \
            httpx.Client(trust_env=False, timeout=20) as http:
        yield s, http


def test_state_machine_with_incompleteness(slow):
    s, http = slow
    a = Api(s, http, "atlas")
    p, out = a.create()
    ni = p["numeroInterne"]
    assert a.read(ni)["etat"] == "TRANSMIS"
    s.advance_clock(5)
    d = a.read(ni)
    assert d["etat"] == "EN_COURS_INSTRUCTION" and d["anomalies"][0]["code"] == "PIECE_MANQUANTE"
    s.advance_clock(3600)  # no decision while incomplete
    assert a.read(ni)["etat"] == "EN_COURS_INSTRUCTION"
    a.convention(p)
    d = a.read(ni)
    assert d["etat"] == "EN_COURS_INSTRUCTION" and d["anomalies"] == []
    s.advance_clock(9.9)
    assert a.read(ni)["etat"] == "EN_COURS_INSTRUCTION"
    s.advance_clock(0.2)
    d = a.read(ni)
    assert d["etat"] == "ENGAGE"
    assert [h["etat"] for h in d["historique"]] == ["TRANSMIS", "EN_COURS_INSTRUCTION", "ENGAGE"]
    times = [h["date"] for h in d["historique"]]
    assert times == sorted(times)
    # engagement and payment schedule from the NPEC (atlas default 9200 EUR / year, 2-year contract)
    assert d["engagement"]["montantTotal"] == pytest.approx(18400.0, abs=0.02)
    assert [e["numero"] for e in d["echeances"]] == [1, 2, 3, 4]
    assert d["echeances"][0] == {"dateEcheance": "2026-09-01", "montant": 4600.0, "numero": 1, "etat": "A_FACTURER"}
    assert d["motifs"] == []


@pytest.mark.parametrize("changes,code", [
    ({"employeur.codeIdcc": "0843"}, "IDCC_AUTRE_OPCO"),   # OPCO EP's IDCC sent to Atlas
    ({"employeur.codeIdcc": "9999"}, "IDCC_INCONNU"),
    ({"employeur.codeIdcc": "0001"}, "IDCC_INCONNU"),
    ({"apprenti.dateNaissance": "1990-01-01"}, "AGE_MAX"),
    ({"formation.rncp": "RNCP99999"}, "NPEC_ABSENT"),
])
def test_refusals(slow, changes, code):
    s, http = slow
    a = Api(s, http, "atlas")
    p, _ = a.create(a.dossier(**changes))
    s.advance_clock(15)
    d = a.read(p["numeroInterne"])
    assert d["etat"] == "REFUSE", d
    assert [m["code"] for m in d["motifs"]] == [code]
    assert d["engagement"] is None and d["echeances"] == []


@pytest.mark.parametrize("flag", ["handicap", "sportifDeHautNiveau", "projetCreationEntreprise"])
def test_age_exceptions(slow, flag):
    s, http = slow
    a = Api(s, http, "atlas")
    p, _ = a.create(a.dossier(**{"apprenti.dateNaissance": "1990-01-01", f"apprenti.{flag}": True}))
    a.convention(p)
    s.advance_clock(15)
    assert a.read(p["numeroInterne"])["etat"] == "ENGAGE"


def test_amendments(slow):
    s, http = slow
    a = Api(s, http, "atlas")
    p, out = a.create()
    av = a.dossier(p["numeroInterne"] + "-A1", **{"contrat.typeContratApp": 33,
                                                    "contrat.numeroContratPrecedent": out["numeroDeca"],
                                                    "contrat.dateEffetAvenant": "2027-01-01"})
    a.create(av)
    s.advance_clock(15)
    assert a.read(av["numeroInterne"])["etat"] == "ENGAGE"  # an avenant needs no new agreement
    bad = a.dossier(uid("AV"), **{"contrat.typeContratApp": 33, "contrat.numeroContratPrecedent": "069202609999999",
                                   "contrat.dateEffetAvenant": "2027-01-01"})
    r = a.post("/v1/dossiers", json=bad)
    assert r.status_code == 422 and r.json()["erreurs"][0]["champ"] == "contrat.numeroContratPrecedent"
    # missing numeroContratPrecedent / dateEffetAvenant
    r = a.post("/v1/dossiers", json=a.dossier(**{"contrat.typeContratApp": 31}))
    assert {e["champ"] for e in r.json()["erreurs"]} == {"contrat.numeroContratPrecedent", "contrat.dateEffetAvenant"}
    # a DECA number of another OPCO does not count
    b = Api(s, http, "opcommerce")
    r = b.post("/v1/dossiers", json=b.dossier(**{"contrat.typeContratApp": 33,
                                                  "contrat.numeroContratPrecedent": out["numeroDeca"],
                                                  "contrat.dateEffetAvenant": "2027-01-01"}))
    assert r.status_code == 422


def engaged(s, http, opco="atlas"):
    a = Api(s, http, opco)
    p, _ = a.create()
    a.convention(p)
    s.advance_clock(15)
    d = a.read(p["numeroInterne"])
    assert d["etat"] == "ENGAGE"
    return a, p, d


def facture(p, num, montant, nif=None):
    return {"numeroInterneFacture": nif or uid("F"), "referenceFactureCFA": uid("REF"),
            "numeroInterneDossier": p["numeroInterne"], "echeance": {"numero": num}, "montant": montant,
            "dateFacture": "2026-09-15"}


def test_invoices(slow):
    s, http = slow
    a, p, d = engaged(s, http)
    e1 = d["echeances"][0]
    r = a.post("/v1/factures", json=facture(p, 1, e1["montant"] + 0.01))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "MONTANT_SUPERIEUR"
    f = facture(p, 1, e1["montant"])
    r = a.post("/v1/factures", json=f)
    assert r.status_code == 201 and r.json()["etatFacture"] == "EN_COURS"
    assert a.post("/v1/factures", json=f).status_code == 200          # idempotent
    r = a.post("/v1/factures", json=dict(f, montant=1.0))
    assert r.status_code == 409
    r = a.post("/v1/factures", json=facture(p, 1, 10.0))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "ECHEANCE_DEJA_FACTUREE"
    r = a.post("/v1/factures", json=facture(p, 99, 10.0))
    assert r.status_code == 422 and r.json()["erreurs"][0]["champ"] == "echeance.numero"
    r = a.post("/v1/factures", json=dict(facture(p, 1, 10.0), numeroInterneDossier="inconnu"))
    assert r.status_code == 404
    r = a.get("/v2/factures/etats", params={"numeroInterneFacture": f["numeroInterneFacture"]})
    fe = r.json()["factures"][0]
    assert fe["etatFacture"] == "EN_COURS" and fe["referenceVirement"] is None
    s.advance_clock(30)
    r = a.get("/v2/factures/etats", params={"numeroInterneFacture": f["numeroInterneFacture"]})
    fe = r.json()["factures"][0]
    assert fe["etatFacture"] == "REGLE" and fe["referenceVirement"] and fe["dateReglement"]
    assert fe["montantFacture"] == e1["montant"]
    assert fe["dossiers"] == [{"numeroInterneDossier": p["numeroInterne"], "numeroExterneDossier": d["numeroExterne"],
                               "montant": e1["montant"]}]
    assert a.read(p["numeroInterne"])["echeances"][0]["etat"] == "REGLEE"
    # window on the state-change time
    now = dt.datetime.fromisoformat(s.clock()["now"])
    r = a.get("/v2/factures/etats", params={"dateDebut": (now + dt.timedelta(seconds=1)).isoformat()})
    assert r.json()["factures"] == []
    # a dossier not yet engaged cannot be invoiced
    b = Api(s, http, "atlas")
    p2, _ = b.create()
    r = b.post("/v1/factures", json=facture(p2, 1, 10.0))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "DOSSIER_NON_ENGAGE"


def test_solde_when_all_paid(slow):
    s, http = slow
    a, p, d = engaged(s, http)
    for e in d["echeances"]:
        assert a.post("/v1/factures", json=facture(p, e["numero"], e["montant"])).status_code == 201
    assert a.read(p["numeroInterne"])["etat"] == "ENGAGE"
    s.advance_clock(30)
    assert a.read(p["numeroInterne"])["etat"] == "SOLDE"


def test_rupture(slow):
    s, http = slow
    a, p, d = engaged(s, http)
    ni = p["numeroInterne"]
    r = a.post("/v2/dossiers/rupture/employeur", json={"numeroInterne": ni, "dateRupture": "2030-01-01", "motif": "x"})
    assert r.status_code == 422 and r.json()["erreurs"][0]["champ"] == "dateRupture"
    r = a.post("/v2/dossiers/rupture/employeur", json={"numeroInterne": ni, "dateRupture": "2027-03-15",
                                                        "motif": "Rupture d'un commun accord"})
    assert r.status_code == 200 and r.json()["etat"] == "RUPTU"
    d = a.read(ni)
    assert d["etat"] == "RUPTU" and d["historique"][-1]["etat"] == "RUPTU"
    assert [e["etat"] for e in d["echeances"]] == ["A_FACTURER", "A_FACTURER", "ANNULEE", "ANNULEE"]
    r = a.post("/v2/dossiers/rupture/employeur", json={"numeroInterne": ni, "dateRupture": "2027-02-15", "motif": "x"})
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "ETAT_INCOMPATIBLE"
    r = a.post("/v1/factures", json=facture(p, 3, 1.0))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "ECHEANCE_ANNULEE"
    r = a.post("/v2/dossiers/rupture/employeur", json={"numeroInterne": "inconnu", "dateRupture": "2027-02-15", "motif": "x"})
    assert r.status_code == 404
    r = a.post("/v2/dossiers/rupture/employeur", json={"numeroInterne": ni})
    assert r.status_code == 422


def test_etats_window_paging_exact(slow):
    s, http = slow
    a = Api(s, http, "mobilites")
    t0 = dt.datetime.fromisoformat(s.clock()["now"])
    nis = []
    for _ in range(7):
        p, _ = a.create()
        a.convention(p)
        nis.append(p["numeroInterne"])
        s.advance_clock(1)
    t1 = dt.datetime.fromisoformat(s.clock()["now"])
    # window [t0, t1): the 7 creations, each once, in its latest state of the window
    r = a.get("/v2/dossiers/etats", params={"dateDebut": t0.isoformat(), "dateFin": t1.isoformat(), "taillePage": 3})
    body = r.json()
    assert body["total"] == 7 and body["count"] == 3 and body["page"] == 1
    seen = []
    for page in (1, 2, 3, 4):
        r = a.get("/v2/dossiers/etats", params={"dateDebut": t0.isoformat(), "dateFin": t1.isoformat(),
                                                "taillePage": 3, "numeroPage": page})
        seen += r.json()["EtatDossierResult"]
    assert sorted(x["numeroInterne"] for x in seen) == sorted(nis)
    keys = [(x["dateEtat"], x["numeroInterne"]) for x in seen]
    assert keys == sorted(keys)
    # later: every dossier goes EN_COURS (t+5) then ENGAGE (t+15): a window after t1 lists them again
    s.advance_clock(20)
    t2 = dt.datetime.fromisoformat(s.clock()["now"])
    r = a.get("/v2/dossiers/etats", params={"dateDebut": t1.isoformat(), "dateFin": t2.isoformat(), "taillePage": 100})
    items = [x for x in r.json()["EtatDossierResult"] if x["numeroInterne"] in nis]
    assert len(items) == 7 and {x["etat"] for x in items} == {"ENGAGE"}
    # a window in the future is empty (no state change is shown before it happens)
    r = a.get("/v2/dossiers/etats", params={"dateDebut": (t2 + dt.timedelta(seconds=1)).isoformat()})
    assert r.json()["total"] == 0
    # bad params
    for params in ({"numeroPage": "0"}, {"numeroPage": "x"}, {"taillePage": "100000"}, {"dateDebut": "hier"}):
        r = a.get("/v2/dossiers/etats", params=params)
        assert r.status_code == 400, params



def _with_fate(kind, prefix, montant, shares, opco="atlas"):
    """An invoice number whose fate at ``opco`` is ``kind`` (OK / PARTIEL / REJET), by the server's rule."""
    from cfa_opco.sandbox.config import load_config, opco_settings
    from cfa_opco.sandbox.invoicing import issue_for
    st = opco_settings(load_config(None, {"opcos": {opco: {"factures": shares}}}), opco)
    return next(n for n in (f"{prefix}-{i}" for i in range(1000)) if issue_for(st, opco, n, montant).kind == kind)


@pytest.fixture()
def instructing():
    shares = {"rejet": 0.3, "partiel": 0.3, "part_reglee": 0.75}
    with run_sandbox(rate_limit=0, overrides={"delays": {"instruction": 5, "decision": 10, "reglement": 30},
                                              "opcos": {"atlas": {"factures": shares}}}) as s, \
            httpx.Client(trust_env=False, timeout=20) as http:
        yield s, http, shares


def test_invoice_instruction_rejected_partly_paid_and_paid(instructing):
    """The OPCO's own instruction: one invoice paid, one paid in part with a comment, one rejected
    with its reason — whose échéance can then be invoiced again under a new number."""
    s, http, shares = instructing
    a, p, d = engaged(s, http)
    e1, e2, e3 = d["echeances"][:3]
    nifs = {}
    for kind, e in (("OK", e1), ("PARTIEL", e2), ("REJET", e3)):
        nifs[kind] = _with_fate(kind, uid("F"), e["montant"], shares)
        assert a.post("/v1/factures", json=facture(p, e["numero"], e["montant"], nif=nifs[kind])).status_code == 201
    r = a.post("/v1/factures", json=facture(p, e3["numero"], e3["montant"]))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "ECHEANCE_DEJA_FACTUREE"   # not yet rejected
    s.advance_clock(30)
    states = {x["numeroInterneFacture"]: x for x in a.get("/v2/factures/etats").json()["factures"]}
    ok, part, rej = (states[nifs[k]] for k in ("OK", "PARTIEL", "REJET"))
    assert ok["etatFacture"] == "REGLE" and ok["montantRegle"] == e1["montant"] and ok["commentaire"] == "réglée"
    assert part["etatFacture"] == "REGLE" and part["montantRegle"] == round(e2["montant"] * 0.75, 2)
    assert part["commentaire"].startswith("réglée partiellement") and part["referenceVirement"]
    assert part["dossiers"][0]["montant"] == part["montantRegle"]
    assert rej["etatFacture"] == "REJETE" and rej["referenceVirement"] is None and rej["montantRegle"] is None
    assert rej["motifsRejet"][0]["code"] and rej["commentaire"].startswith("rejetée : ")
    ech = {e["numero"]: e["etat"] for e in a.read(p["numeroInterne"])["echeances"]}
    assert ech[e1["numero"]] == "REGLEE" and ech[e2["numero"]] == "REGLEE" and ech[e3["numero"]] == "A_FACTURER"
    # the rejected échéance is invoiced again under a new number; the same number replayed keeps its state
    again = _with_fate("OK", uid("F-AGAIN"), e3["montant"], shares)
    assert a.post("/v1/factures", json=facture(p, e3["numero"], e3["montant"], nif=again)).status_code == 201
    r = a.post("/v1/factures", json=facture(p, e3["numero"], e3["montant"], nif=nifs["REJET"]))
    assert r.status_code == 409   # same number, other content (referenceFactureCFA differs)


def test_solde_waits_for_the_invoice_replacing_a_rejected_one(instructing):
    s, http, shares = instructing
    a, p, d = engaged(s, http)
    ech = d["echeances"]
    for i, e in enumerate(ech):
        kind = "REJET" if i == 0 else "OK"
        nif = _with_fate(kind, uid("F"), e["montant"], shares)
        assert a.post("/v1/factures", json=facture(p, e["numero"], e["montant"], nif=nif)).status_code == 201
    s.advance_clock(30)
    assert a.read(p["numeroInterne"])["etat"] == "ENGAGE"      # échéance 1 rejected: not paid off
    nif = _with_fate("OK", uid("F-AGAIN"), ech[0]["montant"], shares)
    assert a.post("/v1/factures", json=facture(p, ech[0]["numero"], ech[0]["montant"], nif=nif)).status_code == 201
    s.advance_clock(30)
    assert a.read(p["numeroInterne"])["etat"] == "SOLDE"


@pytest.fixture()
def certifying():
    with run_sandbox(rate_limit=0, overrides={"delays": {"instruction": 5, "decision": 10, "reglement": 30},
                                              "opcos": {"afdas": {"instruction": {"certificat_requis": True}}}}) as s, \
            httpx.Client(trust_env=False, timeout=20) as http:
        yield s, http


def certificat(p, e, kind):
    return {"numeroInterneDossier": p["numeroInterne"], "typeCertificat": kind,
            "echeance": {"numero": e["numero"], "codification": "HEURES", "duree": 400,
                         "dateDebut": e["dateEcheance"], "dateFin": e["dateEcheance"]}}


def test_certificat_required_before_the_invoice(certifying):
    """Where the OPCO requires certificats de réalisation (AFDAS), each échéance says which one,
    an invoice without it is refused, the certificat is idempotent per échéance."""
    s, http = certifying
    a = Api(s, http, "afdas")       # AFDAS serves no dossier read: the échéances from the sandbox itself
    p, _ = a.create()
    a.convention(p)
    s.advance_clock(15)
    d = s.dossier("afdas", p["numeroInterne"])
    assert d["etat"] == "ENGAGE"
    ech = d["echeances"]
    assert [e["certificatRequis"] for e in ech] == ["Intermediaire"] * (len(ech) - 1) + ["Final"]
    assert not any(e["certificatRecu"] for e in ech)
    r = a.post("/v1/factures", json=facture(p, 1, ech[0]["montant"]))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "CERTIFICAT_MANQUANT"
    r = a.post("/v2/certificats", json=certificat(p, ech[0], "Final"))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "TYPE_CERTIFICAT"
    r = a.post("/v2/certificats", json=certificat(p, ech[0], "Intermediaire"))
    assert r.status_code == 201
    again = a.post("/v2/certificats", json=certificat(p, ech[0], "Intermediaire"))
    assert again.status_code == 200 and again.json()["idCertificat"] == r.json()["idCertificat"]
    assert s.dossier("afdas", p["numeroInterne"])["echeances"][0]["certificatRecu"] is True
    assert a.post("/v1/factures", json=facture(p, 1, ech[0]["montant"])).status_code == 201
    r = a.post("/v2/certificats", json=certificat(p, {"numero": 99, "dateEcheance": "2027-01-01"}, "Final"))
    assert r.status_code == 422 and r.json()["erreurs"][0]["code"] == "ECHEANCE_INCONNUE"
