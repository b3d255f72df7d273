"""Invoice states read through the hook (``/v2/factures/etats``) in every response-shape
profile: paid, paid in part (the amount actually paid), rejected (the OPCO's reason), all
pages, whatever the names and paging the server uses."""
from __future__ import annotations

import datetime as dt

import pytest

from cfa_opco.providers.opco.exceptions import OpcoRouteNotServed
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.reading import read_facture_state
from cfa_opco.sandbox.config import load_config, opco_settings
from cfa_opco.sandbox.invoicing import issue_for
from cfa_opco.sandbox.seed import sample_dossier

from tests.helpers import SIREN, SOFTWARE
from tests.providers.test_hook_profiles import CASES

SHARES = {"rejet": 0.3, "partiel": 0.3, "part_reglee": 0.75}


def _with_fate(kind: str, prefix: str, montant: float) -> str:
    st = opco_settings(load_config(None, {"opcos": {"atlas": {"factures": SHARES}}}), "atlas")
    return next(n for n in (f"{prefix}-{i}" for i in range(1000)) if issue_for(st, "atlas", n, montant).kind == kind)


@pytest.fixture
def invoiced(sandbox, opco_conn):
    """An engaged atlas dossier whose first four échéances are invoiced: paid, paid in part,
    rejected, paid; the clock moved past the payment delay."""
    sandbox.patch_settings(page_size={"default": 2, "max": 1000},
                           delays={"instruction": 0, "decision": 0, "reglement": 30},
                           opcos={"atlas": {"factures": SHARES}})
    h = OpcoHook(opco_conn("atlas"), software=SOFTWARE, backoff_base=0.01, backoff_max=0.05)
    t0 = h.server_now() - dt.timedelta(seconds=5)
    payload = sample_dossier("atlas", SIREN, "FS-1")
    assert h.send_once(payload).etat
    assert h.attach_document("FS-1", "CONVENTION_FORMATION", "convention.pdf", b"%PDF-1.4 convention").ok
    ech = h.get_echeances("FS-1")
    assert len(ech) >= 4
    kinds = ["OK", "PARTIEL", "REJET", "OK"]
    nifs = []
    for e, kind in zip(ech, kinds):
        nif = _with_fate(kind, f"FS-F{e.numero}", e.montant)
        r = h.send_facture({"numeroInterneFacture": nif, "referenceFactureCFA": nif, "numeroInterneDossier": "FS-1",
                            "echeance": {"numero": e.numero}, "montant": e.montant, "dateFacture": "2026-09-15"})
        assert r.status in (200, 201, 204), r.erreurs
        nifs.append(nif)
    sandbox.advance_clock(60)
    yield sandbox, h, t0, dict(zip(kinds[:3], nifs[:3])), ech
    sandbox.set_profile(None, "strict")


@pytest.mark.parametrize("profile", CASES)
def test_paid_partly_paid_rejected_in_every_profile(invoiced, profile):
    sandbox, h, t0, nifs, ech = invoiced
    sandbox.set_profile(None, profile)
    got = {st.numero_facture: st for st in h.iter_facture_changes(t0, None, page_size=2)}
    assert len(got) == 4                                   # two per page: every page read once
    ok, part, rej = got[nifs["OK"]], got[nifs["PARTIEL"]], got[nifs["REJET"]]
    assert ok.etat_norm == "REGLE" and ok.montant_regle == ech[0].montant and ok.reference_virement
    assert part.etat_norm == "REGLE" and part.montant_regle == round(ech[1].montant * 0.75, 2)
    assert part.montant == ech[1].montant and "partiellement" in part.commentaire
    assert rej.etat_norm == "REJETE" and rej.montant_regle is None and rej.commentaire.startswith("rejetée")
    if "renamed_fields" not in profile:
        assert rej.motifs and rej.motifs[0]["code"]


def test_unknown_words_are_kept_not_guessed():
    st = read_facture_state({"numeroFacture": "F1", "statut": "Mise en paiement", "montant": "120,50"})
    assert st.etat == "MISE_EN_PAIEMENT" and st.etat_norm == "EN_COURS" and st.montant == 120.5
    st = read_facture_state({"numeroFacture": "F2", "statut": "Litige fournisseur", "montant": 10})
    assert st.etat == "LITIGE_FOURNISSEUR" and st.etat_norm is None and st.montant_regle is None
    st = read_facture_state({"numeroInterneFacture": "F3", "etatFacture": "REGLE", "montantFacture": 100,
                             "dossiers": [{"montant": "60.00"}, {"montant": 30}]})
    assert st.montant_regle == 90.0


def test_route_not_served(opco_conn, sandbox):
    h = OpcoHook(opco_conn("opco_ep"), software=SOFTWARE)
    with pytest.raises(OpcoRouteNotServed):
        list(h.iter_facture_changes(dt.datetime.now(dt.timezone.utc), None))
