"""The invoices' quality suite (issue 12, point 3) on the seeded ERPs, through Great Expectations
(suite cfa_opco_facture) and a real PostgreSQL: each seeded invoice defect is caught with its rule
and a French message, no clean invoice is reported, and the quality reports show, per site, the
invoices to fix (page section and CSV) and the run-wide CSV."""
from __future__ import annotations

import csv

import pytest

from cfa_opco.erp.generator import INVOICE_DEFECTS
from cfa_opco.extraction import extract
from cfa_opco.factures import stage_invoices
from cfa_opco.quality.gate import run_quality_gate
from cfa_opco.quality.invoices import RULES_BY_CODE, check_invoices
from cfa_opco.report_location import site_page
from tests.helpers import rows

RUN = "manual__invoices"


@pytest.fixture(scope="module")
def gated(seeded_erp, sources, pg_server, tmp_path_factory):
    from cfa_opco.connector import migrate
    from tests.conftest import make_database

    connector = make_database("test_connector_invoices")
    migrate(connector)
    extract(RUN, sources, connector)
    stage_invoices(RUN, sources, connector)
    reports = tmp_path_factory.mktemp("reports")
    summary = run_quality_gate(RUN, connector, reports_dir=reports)
    return {"connector": connector, "erp": seeded_erp, "reports": reports, "summary": summary}


def test_each_seeded_invoice_defect_is_caught_and_no_clean_invoice_is_reported(gated):
    truth = rows(gated["erp"]["erp_main"], "SELECT source_id, ligne, rule_code FROM seed_invoice_truth")
    expected = {(s, l, r) for s, l, r in truth if r}
    assert {r for _, _, r in expected} == set(INVOICE_DEFECTS)
    found = rows(gated["connector"], """SELECT source_id, ligne, rule_code, severity, message FROM facture_anomaly
                                         WHERE run_id = %s""", RUN)
    assert {(s, l, r) for s, l, r, _, _ in found} == expected          # recall and precision: 100 %
    assert {sev for *_, sev, _ in found} == {"error"}
    messages = {r: m for _, _, r, _, m in found}
    assert "dépasse le montant de l'échéance" in messages["FACTURE_MONTANT_SUPERIEUR"]
    assert "avant le début de l'échéance" in messages["FACTURE_AVANT_ECHEANCE"]
    assert "utilisé par plusieurs factures" in messages["FACTURE_NUMERO_DOUBLON"]
    assert "n'est pas engagé par l'OPCO (dossier en quarantaine" in messages["FACTURE_DOSSIER_NON_ENGAGE"]
    assert "ne porte pas de numéro d'échéance" in messages["FACTURE_ECHEANCE_MANQUANTE"]
    assert "n'est pas un montant facturable" in messages["FACTURE_MONTANT_INVALIDE"]
    assert "n'est pas celui de l'établissement du contrat" in messages["FACTURE_SIRET"]
    verdicts = dict(((s, l), v) for s, l, v in rows(
        gated["connector"], "SELECT source_id, ligne, verdict FROM facture_verdict WHERE run_id = %s", RUN))
    assert len(verdicts) == len(truth)
    assert {k for k, v in verdicts.items() if v == "TO_FIX"} == {(s, l) for s, l, _ in expected}
    inv = gated["summary"]["invoices"]
    assert inv["checked"] == len(truth) and inv["to_fix"] == len({(s, l) for s, l, _ in expected})
    # the dossiers are never held for their invoices: the quarantined ones are the seeded dossier defects
    quarantined = {n for (n,) in rows(gated["connector"], """SELECT numero_interne FROM quality_verdict
                                                              WHERE run_id = %s AND verdict = 'QUARANTINE'""", RUN)}
    assert quarantined == {n for (n,) in rows(gated["erp"]["erp_main"], "SELECT numero_interne FROM seed_ground_truth")}


def test_the_reports_show_the_invoices_to_fix_per_site(gated):
    folder = gated["reports"]
    whole = list(csv.DictReader((folder / "factures_a_corriger.csv").open(encoding="utf-8-sig"), delimiter=";"))
    assert len(whole) == rows(gated["connector"], "SELECT count(*) FROM facture_anomaly WHERE run_id = %s", RUN)[0][0]
    assert {"facture", "dossier", "règle", "à corriger", "site"} <= set(whole[0])
    sites = {r["site"] for r in whole}
    assert len(sites) > 2
    for site in sites:
        page = (folder / site_page(site)).read_text(encoding="utf-8")
        assert "Factures à corriger" in page
        per_site = folder / (site_page(site)[:-5] + "_factures_a_corriger.csv")
        got = list(csv.DictReader(per_site.open(encoding="utf-8-sig"), delimiter=";"))
        assert got and {r["site"] for r in got} == {site}
        assert any(r["facture"] in page for r in got)
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert "factures_a_corriger.csv" in index


def test_gx_and_pandas_agree_on_invoices(gated):
    import pandas as pd

    conn_rows = rows(gated["connector"], """SELECT source_id, ligne, numero_facture, numero_interne, echeance_numero,
                                                   date_facture, montant, facture_siret, cfa_siret, site_code,
                                                   echeance_date, echeance_montant, illisible
                                            FROM staged_facture WHERE run_id = %s""", RUN)
    df = pd.DataFrame(conn_rows, columns=["source_id", "ligne", "numero_facture", "numero_interne", "echeance_numero",
                                          "date_facture", "montant", "facture_siret", "cfa_siret", "site_code",
                                          "echeance_date", "echeance_montant", "illisible"])
    quarantined = set(rows(gated["connector"], """SELECT source_id, numero_interne FROM quality_verdict
                                                  WHERE run_id = %s AND verdict = 'QUARANTINE'""", RUN))
    a_gx, _ = check_invoices(df, quarantined, {}, engine="gx")
    a_pd, _ = check_invoices(df, quarantined, {}, engine="pandas")
    key = ["source_id", "ligne", "rule_code"]
    assert sorted(map(tuple, a_gx[key].values.tolist())) == sorted(map(tuple, a_pd[key].values.tolist()))
    assert set(RULES_BY_CODE) >= set(INVOICE_DEFECTS)


def test_an_unreadable_value_and_a_refused_dossier_are_reported():
    import datetime as dt
    from decimal import Decimal

    import pandas as pd

    base = {"source_id": "erp_est", "ligne": "1", "numero_facture": "F26/1", "numero_interne": "D-1",
            "echeance_numero": 1, "date_facture": dt.date(2026, 10, 1), "montant": Decimal("100.00"),
            "facture_siret": "41893652200014", "cfa_siret": "41893652200014", "site_code": "EST-1",
            "echeance_date": dt.date(2026, 9, 1), "echeance_montant": Decimal("100.00"), "illisible": None}
    df = pd.DataFrame([base, dict(base, ligne="2", numero_facture="F26/2", numero_interne="D-2"),
                       dict(base, ligne="3", numero_facture="F26/3", date_facture=None,
                            illisible={"date_facture": "date de facture illisible : 31/02/2026 est une date impossible"})])
    anomalies, verdicts = check_invoices(df, set(), {("erp_est", "D-2"): "REFUSE"}, engine="pandas")
    got = {(r.ligne, r.rule_code): r.message for r in anomalies.itertuples()}
    assert set(got) == {("2", "FACTURE_DOSSIER_NON_ENGAGE"), ("3", "FACTURE_VALEUR_ILLISIBLE")}
    assert "état à l'OPCO : REFUSE" in got[("2", "FACTURE_DOSSIER_NON_ENGAGE")]
    assert "31/02/2026" in got[("3", "FACTURE_VALEUR_ILLISIBLE")]
    assert list(verdicts["verdict"]) == ["TRANSMIT", "TO_FIX", "TO_FIX"]
