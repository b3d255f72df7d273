"""The cash view's arithmetic and files, on hand-made échéance lines (the end-to-end test
builds it from a real run)."""
import datetime as dt

from openpyxl import load_workbook

from cfa_opco.cash.positions import CashLine, build
from cfa_opco.cash.report import EXCEL_NAME, HTML_NAME, write_excel, write_html

D = dt.date


def lines():
    base = dict(site="LYON", source_id="erp_main")
    return [
        CashLine(opco="akto", numero_interne="C1", echeance=1, date_echeance=D(2026, 9, 1), attendu=1000.0,
                 facture="F1", montant_facture=1000.0, etat_facture="REGLE", montant_regle=1000.0,
                 reference_virement="VIR-1", date_reglement=D(2026, 10, 1), paid_this_run=True, **base),
        CashLine(opco="akto", numero_interne="C1", echeance=2, date_echeance=D(2026, 10, 1), attendu=1000.0,
                 facture="F2", montant_facture=1000.0, etat_facture="REGLE", montant_regle=800.0,
                 commentaire="réglée partiellement", **base),
        CashLine(opco="opco_ep", numero_interne="C2", echeance=1, date_echeance=D(2026, 8, 1), attendu=500.0,
                 facture="F3", montant_facture=500.0, etat_facture="REJETE", commentaire="rejetée : RIB", **base),
        CashLine(opco="opco_ep", numero_interne="C2", echeance=2, date_echeance=D(2026, 11, 1), attendu=500.0,
                 facture="F4", montant_facture=500.0, etat_facture="EN_COURS", sent_this_run=True, **base),
        CashLine(opco="atlas", numero_interne="C3", echeance=1, date_echeance=D(2027, 3, 1), attendu=700.0, **base),
        CashLine(opco="atlas", numero_interne="C3", echeance=2, date_echeance=D(2026, 7, 1), attendu=700.0,
                 annulee=True, **base),
    ]


def test_totals_add_up_and_overdue_oldest_first():
    v = build(lines(), today=D(2026, 12, 1))
    t = v.total
    assert t.n_echeances == 6 and sum(t.by_situation.values()) == 6
    assert t.by_situation == {"regle": 1, "regle_partiel": 1, "facture": 1, "rejete": 1, "a_facturer": 1, "annule": 1}
    assert t.attendu == 3700.0                 # the cancelled échéance is not expected any more
    assert t.facture == 2500.0                 # the rejected invoice is not counted as invoiced
    assert t.paye == 1800.0
    assert [(ln.numero_interne, ln.echeance) for ln in v.overdue] == [("C2", 1), ("C1", 2), ("C2", 2)]
    assert t.en_retard == 500.0 + 200.0 + 500.0
    assert v.by_opco["akto"].paye == 1800.0 and v.by_month["2026-10"].paye == 800.0
    assert v.this_run == {"factures_transmises": 1, "montant_facture": 500.0, "paiements_recus": 1,
                          "montant_paye": 1000.0}


def test_html_and_excel(tmp_path):
    v = build(lines(), today=D(2026, 12, 1))
    write_html(tmp_path / HTML_NAME, v, run_id="r1", generated="01/12/2026")
    write_excel(tmp_path / EXCEL_NAME, v, run_id="r1", generated="01/12/2026")
    page = (tmp_path / HTML_NAME).read_text(encoding="utf-8")
    assert "rejetée : RIB" in page and "<svg" in page and "OPCO EP" in page.replace("Opco", "OPCO")
    wb = load_workbook(tmp_path / EXCEL_NAME)
    assert wb.sheetnames == ["Synthèse", "Par OPCO", "Par mois", "En retard", "Rejetées", "Échéances", "Passage"]
    late = list(wb["En retard"].iter_rows(values_only=True))
    assert [r[2] for r in late[1:]] == ["C2", "C1", "C2"]
    assert len(list(wb["Échéances"].iter_rows())) == 7
