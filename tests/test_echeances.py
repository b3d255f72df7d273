"""The payment schedule (issue 12, point 2) against the real sandbox and a real PostgreSQL:
every engaged dossier's échéances are read back once, stored with their history, read again
only when stale, written back to the ERP that allows it; an OPCO without the read route and
an answer nobody can read give a French reason per dossier, never an exception."""
from __future__ import annotations

import datetime as dt

import pytest

from cfa_opco import settings
from cfa_opco.erp.generator import minimal_pdf
from cfa_opco.echeances import echeances_of, sync_echeances
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.reading import Echeance, Unreadable, read_echeances
from cfa_opco.sandbox.config import load_config, npec_for, opco_settings
from cfa_opco.sandbox.seed import sample_dossier
from cfa_opco.sandbox.store import schedule
from cfa_opco.writeback import ErpWriteback
from tests.helpers import SIREN, rows


def _engaged(connector: str, opco: str, numeros: list[str], source: str = "erp_main") -> None:
    from cfa_opco.db.connect import connection

    with connection(connector) as conn, conn.cursor() as cur:
        for n in numeros:
            cur.execute("""INSERT INTO opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, etat)
                           VALUES (%s, %s, %s, %s, %s, 'ENGAGE')""", (source, n, opco, SIREN, f"opco_{opco}_{SIREN}"))


def _expected(opco: str) -> list[dict]:
    """The sandbox's own schedule of the sample contract (NPEC of config/sandbox.yaml)."""
    payload = sample_dossier(opco)
    npec = npec_for(opco_settings(load_config(settings.PROJECT_DIR / "config" / "sandbox.yaml"), opco),
                    payload["formation"]["rncp"])
    return schedule(payload, npec)


def test_read_echeances_is_tolerant_and_never_raises():
    items = [{"numero": 1, "dateEcheance": "2026-09-01", "montant": 4600.0, "etat": "A_FACTURER"},
             {"numero": "2", "dateEcheance": "2027-03-01", "montant": "4 600,00", "etat": "à facturer"}]
    bare = read_echeances({"numeroInterne": "X", "etat": "ENGAGE", "echeances": items}, "X", "atlas")
    assert bare == [Echeance(1, "2026-09-01", None, 4600.0, "A_FACTURER"),
                    Echeance(2, "2027-03-01", None, 4600.0, "A_FACTURER")]
    wrapped = read_echeances({"data": {"dossier": {"numeroInterne": "X"}, "echeancier": {"items": [
        {"numeroEcheance": 1, "dateDebut": "01/09/2026", "montantEcheance": 4600}]}}}, "X", "atlas")
    assert wrapped == [Echeance(1, "2026-09-01", None, 4600.0, None)]
    listed = read_echeances([{"numeroInterne": "X", "echeances": items[:1]}], "X")
    assert [e.numero for e in listed] == [1]
    assert read_echeances({"numeroInterne": "X", "echeances": None}, "X") == []
    for bad, words in (({"numeroInterne": "X", "etat": "ENGAGE"}, "pas d'échéancier"),
                       ({"numeroInterne": "X", "echeances": [{"numero": 1}]}, "sans montant lisible"),
                       ({"numeroInterne": "X", "echeances": [items[0], items[0]]}, "en double"),
                       ("<html>", "pas de dossier")):
        got = read_echeances(bad, "X", "atlas")
        assert isinstance(got, Unreadable) and words in str(got), got
        assert "OPCO Atlas" in str(got) and "GET /v2/dossiers" in str(got)


def test_engaged_dossiers_get_their_echeances_stored_once_with_history(sandbox, opco_conn, connector_dsn):
    conn_id = opco_conn("atlas")
    seeded = sandbox.seed("atlas", count=3, prefix="ECH", outcomes=["ENGAGE"], spread_seconds=1)
    numeros = [f"ECH-{int(seeded['first'].split('-')[1]) + i:09d}" for i in range(3)]
    _engaged(connector_dsn, "atlas", numeros)
    expected = _expected("atlas")
    assert len(expected) == 4

    out = sync_echeances(connector_dsn)
    assert out["dossiers"] == 3 and out["read"] == 3 and out["changed"] == 3 and out["errors_count"] == 0
    assert out["echeances"] == 3 * len(expected)
    stored = echeances_of(connector_dsn, "erp_main", numeros[0])
    assert [(e["numero"], e["date_echeance"].isoformat(), float(e["montant"]), e["etat"]) for e in stored] == \
        [(e["numero"], e["dateEcheance"], e["montant"], "A_FACTURER") for e in expected]
    assert rows(connector_dsn, "SELECT count(*) FROM opco_echeance_history WHERE change = 'NEW'")[0][0] == 12
    assert rows(connector_dsn, """SELECT count(*) FROM opco_dossier WHERE echeances_read_at IS NOT NULL
                                  AND echeances_error IS NULL""")[0][0] == 3
    # read once: a second run has nothing due; a stale one is read again, without a new history row
    assert sync_echeances(connector_dsn)["dossiers"] == 0
    again = sync_echeances(connector_dsn, stale_after=dt.timedelta(0))
    assert again["read"] == 3 and again["changed"] == 0
    # the OPCO's schedule changes (échéance 1 invoiced): one CHANGED row, the rest as before
    with OpcoHook(conn_id) as hook:
        resp = hook.send_facture({"numeroInterneFacture": "F-ECH-1", "referenceFactureCFA": "F-ECH-1",
                                  "numeroInterneDossier": numeros[0], "echeance": {"numero": 1},
                                  "montant": expected[0]["montant"], "dateFacture": expected[0]["dateEcheance"]})
        assert resp.ok, resp.erreurs
    sync_echeances(connector_dsn, stale_after=dt.timedelta(0))
    changes = rows(connector_dsn, """SELECT numero_interne, numero, etat FROM opco_echeance_history
                                     WHERE change = 'CHANGED'""")
    assert changes == [(numeros[0], 1, "REGLEE")]      # (the instant sandbox pays at once)
    # the history is append-only
    from cfa_opco.db.connect import connection
    with pytest.raises(Exception, match="append-only"):
        with connection(connector_dsn) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM opco_echeance_history")


def test_an_opco_without_the_read_route_and_an_unknown_dossier_give_a_reason(sandbox, opco_conn, connector_dsn):
    opco_conn("constructys")
    opco_conn("atlas")
    _engaged(connector_dsn, "constructys", ["C-1", "C-2"])
    _engaged(connector_dsn, "atlas", ["NOT-AT-THE-OPCO"])
    out = sync_echeances(connector_dsn)
    assert out["not_served"] == {"constructys": 2}
    assert out["read"] == 0 and out["errors_count"] == 1
    reasons = dict(rows(connector_dsn, "SELECT numero_interne, echeances_error FROM opco_dossier"))
    assert reasons["C-1"].startswith("Échéancier non lisible par API : l'OPCO Constructys") or \
        "Constructys" in reasons["C-1"], reasons
    assert "NOT-AT-THE-OPCO" in out["errors"] and reasons["NOT-AT-THE-OPCO"]
    # never read: the next run tries the unknown dossier again
    assert rows(connector_dsn, "SELECT count(*) FROM opco_dossier WHERE echeances_read_at IS NULL")[0][0] == 3


def test_an_unreadable_answer_keeps_the_previous_schedule_and_says_why(sandbox, opco_conn, connector_dsn):
    opco_conn("atlas")
    seeded = sandbox.seed("atlas", count=1, prefix="UNR", outcomes=["ENGAGE"], spread_seconds=1)
    _engaged(connector_dsn, "atlas", [seeded["first"]])
    assert sync_echeances(connector_dsn)["read"] == 1
    # the OPCO's renamed fields (numbers as text, amounts with a decimal comma) read the same
    sandbox.set_profile("atlas", "renamed_fields")
    same = sync_echeances(connector_dsn, stale_after=dt.timedelta(0))
    assert same["read"] == 1 and same["changed"] == 0, same
    # every answer a gateway's HTML page with status 200 (reset by the fixture)
    sandbox.set_profile("atlas", "html_gateway")
    sandbox.patch_settings(profile_options={"html_200_share": 1.0, "seed": 1})
    out = sync_echeances(connector_dsn, stale_after=dt.timedelta(0))
    assert out["read"] == 0 and out["errors_count"] == 1
    why = rows(connector_dsn, "SELECT echeances_error FROM opco_dossier")[0][0]
    assert "Réponse illisible de OPCO Atlas sur GET /v2/dossiers" in why, why
    assert len(echeances_of(connector_dsn, "erp_main", seeded["first"])) == 4


def test_echeances_are_written_back_to_the_erp_that_allows_it(sandbox, opco_conn, connector_dsn, seeded_erp):
    conn_id = opco_conn("atlas")
    numero = rows(seeded_erp["erp_main"], "SELECT numero_interne FROM contrat ORDER BY id LIMIT 1")[0][0]
    with OpcoHook(conn_id) as hook:
        assert hook.send_dossier(sample_dossier("atlas", numero_interne=numero)).ok
        assert hook.attach_document(numero, "CONVENTION_FORMATION", "convention.pdf", minimal_pdf("convention")).ok
    _engaged(connector_dsn, "atlas", [numero])
    wb = ErpWriteback(targets={"erp_main": seeded_erp["erp_main"], "erp_est": seeded_erp["erp_est"]})
    out = sync_echeances(connector_dsn, writeback=wb)
    assert out["read"] == 1 and out["written_back"] == 4
    erp = rows(seeded_erp["erp_main"], """SELECT e.numero, e.date_echeance::text, e.montant::float8, e.etat_opco
                                          FROM echeance e JOIN contrat c ON c.id = e.contrat_id
                                          WHERE c.numero_interne = %s ORDER BY 1""", numero)
    assert erp == [(e["numero"], e["dateEcheance"], e["montant"], "A_FACTURER") for e in _expected("atlas")]
