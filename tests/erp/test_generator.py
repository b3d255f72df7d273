"""The seeded generator: valid identifiers where the data is meant to be clean, each
seeded defect really present and recorded, and the same seed giving the same ERPs."""
from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

from cfa_opco.db.connect import connection
from cfa_opco.erp import identifiers as ids
from cfa_opco.erp.generator import AVENANT_DEFECT, DEFECT_RULE, DEFECTS, Generator, add_months, age_on

REF = dt.date(2026, 8, 15)


@pytest.fixture(scope="module")
def gen():
    return Generator(42, 3000, REF).generate()


def test_identifier_helpers():
    siret = ids.siret_from("732829320", "0007")
    assert luhn.is_valid(siret) and len(siret) == 14
    assert not luhn.is_valid(ids.with_wrong_luhn_key(siret))
    la_poste = ids.siret_from(ids.LA_POSTE_SIREN, "0123")
    assert sum(map(int, la_poste)) % 5 == 0
    assert ids.uai_from("0693456") == "0693456G"
    corsica = ids.nir_from("M", 1985, 3, "2A", "004", 123)
    assert stdnum_nir.is_valid(corsica) and corsica[5:7] == "2A"


def test_same_seed_same_data():
    a = Generator(7, 500, REF).generate()
    b = Generator(7, 500, REF).generate()
    c = Generator(8, 500, REF).generate()
    assert a.main.rows == b.main.rows and a.est.rows == b.est.rows and a.truth == b.truth
    assert a.main.rows["contrat"] != c.main.rows["contrat"]


def test_counts_and_sources(gen):
    contracts = len(gen.main.rows["contrat"]) + sum(1 for r in gen.est.rows["T_CONTRAT"] if r[2] == "C")
    avenants = len(gen.main.rows["avenant"]) + sum(1 for r in gen.est.rows["T_CONTRAT"] if r[2] == "A")
    assert contracts + avenants == 3000
    assert 0.03 < avenants / 3000 < 0.07
    assert 0.10 < sum(1 for r in gen.est.rows["T_CONTRAT"] if r[2] == "C") / contracts < 0.20


def test_defect_share_and_every_kind_present(gen):
    share = len(gen.truth) / 3000
    assert 0.06 < share < 0.10, share
    kinds = Counter(t[3] or t[2] for t in gen.truth)   # the seeded kind (detail) or its rule code
    assert set(kinds) == set(DEFECTS) | {AVENANT_DEFECT}
    assert {t[2] for t in gen.truth} == {DEFECT_RULE.get(d, d) for d in DEFECTS} | {AVENANT_DEFECT}


def test_every_opco_receives_dossiers(gen):
    import csv

    from cfa_opco import settings

    with open(settings.REFERENCE_DIR / "idcc_opco.csv", encoding="utf-8") as f:
        opco_of = {r["idcc"]: r["opco_code"] for r in csv.DictReader(f)}
    companies = {r[0]: r[4] for r in gen.main.rows["entreprise"]}
    used = Counter(opco_of.get(companies[c[3]]) for c in gen.main.rows["contrat"])
    assert {o for o in used if o} == set(opco_of.values())


def _main_rows(gen, table):
    from cfa_opco.erp.generator import MAIN_COLUMNS

    cols = MAIN_COLUMNS[table].split()
    return [dict(zip(cols, r)) for r in gen.main.rows[table]]


def test_clean_rows_are_valid_and_defects_are_real(gen):
    truth = {t[1]: t[2] for t in gen.truth if t[0] == "erp_main"}
    companies = {c["id"]: c for c in _main_rows(gen, "entreprise")}
    learners = {a["id"]: a for a in _main_rows(gen, "apprenant")}
    sessions = {s["id"]: s for s in _main_rows(gen, "session_formation")}
    checked = Counter()
    from cfa_opco.dossier.fields import normalize_identifier

    for c in _main_rows(gen, "contrat"):
        defect = truth.get(c["numero_interne"])
        comp, learner, session = companies[c["entreprise_id"]], learners[c["apprenant_id"]], sessions[c["session_id"]]
        siret = normalize_identifier("employeur_siret", comp["siret"])   # typed with spaces/dots sometimes
        siret_ok = siret.isdigit() and (luhn.is_valid(siret) or
                                        (siret.startswith(ids.LA_POSTE_SIREN) and sum(map(int, siret)) % 5 == 0))
        assert siret_ok == (defect not in ("EMPLOYEUR_SIRET_CLE", "EMPLOYEUR_SIRET_FORMAT")), c["numero_interne"]
        assert (len(comp["adresse_voie"]) > 38) == (defect == "CHAMP_LONGUEUR"), c["numero_interne"]
        learner = dict(learner, nir=normalize_identifier("apprenti_nir", learner["nir"]))
        age = age_on(learner["date_naissance"], c["date_debut"])
        exception = learner["rqth"] or learner["sportif_haut_niveau"] or learner["projet_creation_entreprise"]
        assert (age > 29 and not exception) == (defect == "APPRENTI_AGE_MAX"), c["numero_interne"]
        assert (learner["nir"] is None) == (defect == "APPRENTI_NIR_MANQUANT")
        if learner["nir"]:
            assert stdnum_nir.is_valid(learner["nir"])
            year_ok = learner["nir"][1:3] == f"{learner['date_naissance'].year % 100:02d}"
            assert year_ok == (defect != "APPRENTI_NIR_NAISSANCE")
            assert learner["nir"][0] == ("1" if learner["sexe"] == "M" else "2")
        assert (c["date_fin"] < c["date_debut"]) == (defect == "CONTRAT_DATES_ORDRE")
        assert (c["duree_hebdo_heures"] + c["duree_hebdo_minutes"] / 60 > 40) == (defect == "CONTRAT_DUREE_HEBDO_MAX")
        assert (c["date_conclusion"] > c["date_debut"]) == (defect == "CONTRAT_SIGNATURE_APRES_DEBUT")
        late = c["date_fin"] > add_months(session["date_fin"], 3)
        assert late == (defect == "CONTRAT_FIN_APRES_FORMATION"), c["numero_interne"]
        assert (session["duree_heures"] > 9999) == (defect == "FORMATION_HEURES_MAX")
        if age < 18:
            assert learner["representant_nom"], "a minor needs a legal guardian"
        checked[defect] += 1
    assert checked[None] > 2000


def test_loaded_erps_hold_the_ground_truth(seeded_erp):
    with connection(seeded_erp["erp_main"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT rule_code) FROM seed_ground_truth")
        n, kinds = cur.fetchone()
        cur.execute("SELECT count(*) FROM contrat")
        contracts = cur.fetchone()[0]
    assert kinds == len({DEFECT_RULE.get(d, d) for d in DEFECTS}) + 1 and 0.06 * 2000 < n < 0.10 * 2000
    with connection(seeded_erp["erp_est"]) as conn, conn.cursor() as cur:
        cur.execute('SELECT count(*) FROM "T_CONTRAT"')
        est = cur.fetchone()[0]
    assert contracts + est + 0 <= 2000 and contracts > est > 0
    est_files = list((seeded_erp["files_root"] / "erp_est").rglob("*.pdf"))
    assert est_files and est_files[0].read_bytes().startswith(b"%PDF-1.4")


# ---- payment schedules and invoices (issue 12, point 3) ----------------------------------
def test_invoices_are_seeded_deterministically_with_every_defect_kind(gen):
    from cfa_opco.erp.generator import INVOICE_DEFECTS

    a = Generator(7, 500, REF).generate()
    b = Generator(7, 500, REF).generate()
    assert a.invoice_truth == b.invoice_truth and a.main.rows["facture"] == b.main.rows["facture"]
    kinds = Counter(t[-1] for t in gen.invoice_truth)
    assert set(INVOICE_DEFECTS) <= set(kinds), kinds
    assert kinds[None] > 0.85 * len(gen.invoice_truth) and len(gen.invoice_truth) > 1000
    assert {t[0] for t in gen.invoice_truth} == {"erp_main", "erp_est"}
    # a duplicate number: every invoice typed with it is reported
    numbers = Counter((t[0], t[2]) for t in gen.invoice_truth)
    for t in gen.invoice_truth:
        assert (numbers[(t[0], t[2])] > 1) == (t[-1] == "FACTURE_NUMERO_DOUBLON"), t
    # an invoice of a dossier not engaged is one of a quarantined contract
    quarantined = {n for _, n, *_ in gen.truth}
    assert {t[3] for t in gen.invoice_truth if t[-1] == "FACTURE_DOSSIER_NON_ENGAGE"} <= quarantined


def test_schedules_are_the_opcos_and_clean_invoices_match_them(gen):
    from cfa_opco import settings
    from cfa_opco.sandbox.config import load_config, npec_for, opco_settings
    from cfa_opco.sandbox.store import schedule

    cfg = load_config(settings.PROJECT_DIR / "config" / "sandbox.yaml")
    contracts = {c["id"]: c for c, d in gen.contracts if c["company"]["source"] == "erp_main"}
    plans: dict[int, list] = {}
    for _, cid, numero, date, montant, statut in gen.main.rows["echeance"]:
        plans.setdefault(cid, []).append((numero, date, montant))
    cid, plan = next(iter(plans.items()))
    c = contracts[cid]
    opco = gen.opco_of(c["company"]["idcc"])
    npec = npec_for(opco_settings(cfg, opco), c["session"]["formation"]["rncp"])
    expected = schedule({"contrat": {"dateDebutContrat": c["start"].isoformat(),
                                     "dateFinContrat": c["end"].isoformat()}}, npec)
    assert plan == [(e["numero"], e["dateEcheance"], e["montant"]) for e in expected]
    truth = {(t[0], t[1]): t for t in gen.invoice_truth}
    for ligne, numero, cid, ech, date, montant, siret in gen.main.rows["facture"]:
        if truth[("erp_main", str(ligne))][-1] is None:
            due = {n: (dt.date.fromisoformat(d), m) for n, d, m in plans[cid]}
            assert montant == due[ech][1] and date >= due[ech][0] and luhn.is_valid(siret)


def test_staged_invoices_keep_what_the_erp_typed(seeded_erp, sources, connector_dsn):
    """The source mapping (config/sources/erp_*_factures.sql, no Python) staged as typed: both
    ERPs, three decimals kept, erp_est's text dates read, the ERP's échéance joined."""
    from cfa_opco.factures import stage_invoices
    from tests.helpers import rows

    out = stage_invoices("run-inv", sources, connector_dsn)
    truth = rows(seeded_erp["erp_main"], "SELECT source_id, ligne, rule_code FROM seed_invoice_truth")
    assert out["staged"] == len(truth) and out["failed_sources"] == [] and set(out["by_source"]) == {"erp_main",
                                                                                                      "erp_est"}
    staged = {(s, l): (m, e, d, ed) for s, l, m, e, d, ed in rows(
        connector_dsn, """SELECT source_id, ligne, montant, echeance_numero, date_facture, echeance_date
                          FROM staged_facture WHERE run_id = 'run-inv'""")}
    assert set(staged) == {(s, l) for s, l, _ in truth}
    rule = {(s, l): r for s, l, r in truth}
    assert any(m.as_tuple().exponent == -3 and m != m.quantize(m.__class__("0.01"))
               for k, (m, *_) in staged.items() if rule[k] == "FACTURE_MONTANT_INVALIDE") or \
        any(m < 0 for k, (m, *_) in staged.items() if rule[k] == "FACTURE_MONTANT_INVALIDE")
    assert all(e is None for k, (_, e, *_) in staged.items() if rule[k] == "FACTURE_ECHEANCE_MANQUANTE")
    est = [v for (s, _), v in staged.items() if s == "erp_est" and rule[(s, _)] is None]
    assert est and all(d is not None and ed is not None and d >= ed for _, _, d, ed in est)
    # frozen with the run: a retry reuses the batch
    assert stage_invoices("run-inv", sources, connector_dsn)["reused"] is True
