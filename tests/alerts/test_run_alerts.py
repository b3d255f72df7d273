"""End-of-run alerts (3 in doubt, 4 OPCO rates, 5 site digests) and key alerts (2), from a
real connector database, delivered to the local SMTP server and webhook receiver; sent once
(the journal), nothing when alerts are off."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from urllib.parse import quote

import pytest

from cfa_opco.alerts import callbacks, evaluate
from cfa_opco.db.connect import connection

R1, R2 = "scheduled__2026-09-01T04:00:00+00:00", "scheduled__2026-09-02T04:00:00+00:00"
NIR = "185057512345678"


def _quality(cur, run_id: str, day: int, verdicts: list[tuple], anomalies: list[tuple]) -> None:
    at = dt.datetime(2026, 9, day, 4, 5, tzinfo=dt.timezone.utc)
    cur.execute("INSERT INTO extraction_run (run_id) VALUES (%s)", (run_id,))
    cur.execute("INSERT INTO quality_run (run_id) VALUES (%s)", (run_id,))
    for numero, site, verdict in verdicts:
        cur.execute("""INSERT INTO quality_verdict (run_id, source_id, numero_interne, content_hash, site_code,
                                                    verdict, decided_at) VALUES (%s, 'erp_main', %s, 'h', %s, %s, %s)""",
                    (run_id, numero, site, verdict, at))
    for numero, rule, severity in anomalies:
        cur.execute("""INSERT INTO quality_anomaly (run_id, source_id, numero_interne, rule_code, severity, domain,
                                                    field, valeur, message, record_type, record_ref)
                       VALUES (%s, 'erp_main', %s, %s, %s, 'apprenant', 'f', 'v', 'm', 'apprenant', 'r')""",
                    (run_id, numero, rule, severity))


def _sent(cur, run_id: str, opco: str, numero: str, status: str, etat: str | None = None, message: str = "") -> None:
    cur.execute("""INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                                             conn_id, content_hash, status, message)
                   VALUES (%s, 'erp_main', %s, 'DOSSIER', %s, '775672272', %s, 'h', %s, %s)""",
                (run_id, numero, opco, f"opco_{opco}_775672272", status, message or None))
    if etat:
        cur.execute("""INSERT INTO opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, etat,
                                                 first_run_id) VALUES ('erp_main', %s, %s, '775672272', %s, %s, %s)""",
                    (numero, opco, f"opco_{opco}_775672272", etat, run_id))


@pytest.fixture
def two_runs(connector_dsn):
    """Run 1 then run 2 of the daily DAG, as the connector's database keeps them."""
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        _quality(cur, R1, 1, [("D1", "PAR", "QUARANTINE"), ("D2", "PAR", "QUARANTINE"), ("D4", "LYO", "QUARANTINE"),
                              ("D5", "PAR", "TRANSMIT")],
                 [("D1", "CHAMP_OBLIGATOIRE", "error"), ("D2", "NIR_INVALIDE", "error"),
                  ("D4", "SIRET_INVALIDE", "error"), ("D5", "CHAMP_LONGUEUR", "warning")])
        # run 2: D1 still missing its field (not new) and a new rule; D2 fixed; D6 new; D4 unchanged
        _quality(cur, R2, 2, [("D1", "PAR", "QUARANTINE"), ("D2", "PAR", "TRANSMIT"), ("D4", "LYO", "QUARANTINE"),
                              ("D6", "PAR", "QUARANTINE")],
                 [("D1", "CHAMP_OBLIGATOIRE", "error"), ("D1", "DATE_INCOHERENTE", "error"),
                  ("D4", "SIRET_INVALIDE", "error"), ("D6", "CHAMP_OBLIGATOIRE", "error")])
        for i in range(20):   # AKTO: 5 refused of 20 decided = 25 % > 20 %
            _sent(cur, R2, "akto", f"A{i:02d}", "SENT", "REFUSE" if i < 5 else "ENGAGE")
        for i in range(10):   # Atlas: 2 in doubt of 12 sends = 17 % > 10 %
            _sent(cur, R2, "atlas", f"T{i:02d}", "SENT", "ENGAGE")
        for i in range(2):
            _sent(cur, R2, "atlas", f"TD{i}", "PENDING",
                  message=f"réponse perdue (timeout) pour l'apprenti {NIR}")
        for i in range(3):    # Constructys: 2 refused of 3, under min_dossiers: no alert
            _sent(cur, R2, "constructys", f"C{i}", "SENT", "REFUSE" if i < 2 else "ENGAGE")
    return connector_dsn


def test_evaluation_of_a_run(two_runs):
    rates = evaluate.opco_rates(two_runs, R2)
    assert rates["akto"]["refusal_rate"] == 0.25 and rates["akto"]["error_rate"] == 0
    assert rates["atlas"]["error_rate"] == round(2 / 12, 4) and rates["atlas"]["in_doubt"] == 2
    assert set(evaluate.rates_over(rates, 0.2, 0.1, 10)) == {"akto", "atlas"}
    assert evaluate.in_doubt(two_runs, R2)["by_opco"] == {"atlas": 2}
    # new blocking anomalies only: D1's missing field and D4's SIRET were there the day before
    assert evaluate.new_blocking_anomalies(two_runs, R2) == {
        "PAR": {"by_rule": {"DATE_INCOHERENTE": 1, "CHAMP_OBLIGATOIRE": 1}, "dossiers": 2}}
    assert evaluate.new_blocking_anomalies(two_runs, R1) == {
        "LYO": {"by_rule": {"SIRET_INVALIDE": 1}, "dossiers": 1},
        "PAR": {"by_rule": {"CHAMP_OBLIGATOIRE": 1, "NIR_INVALIDE": 1}, "dossiers": 2}}


def _context(run_id: str) -> dict:
    return {"dag_run": SimpleNamespace(run_id=run_id, dag_id="cfa_opco_daily")}


def test_run_end_alerts_are_delivered_once(two_runs, alerts_on, smtp, webhook):
    alerts_on(site_leads={"PAR": "qualite.paris@cfa.test"})
    result = callbacks.send_run_alerts(_context(R2), connector=two_runs)
    assert result["enabled"] is True
    assert sorted((s["kind"], s["site"]) for s in result["sent"]) == [
        ("in_doubt", None), ("rates", None), ("rates", None), ("site_anomalies", "PAR")]
    mails = {m.subject: m for m in smtp.mails}
    assert set(mails) == {"[CFA-OPCO] 2 dossier(s) en doute après l'échéance du run",
                          "[CFA-OPCO] OPCO AKTO : taux de refus 25 %",
                          "[CFA-OPCO] OPCO Atlas : taux d'erreur 17 %",
                          "[CFA-OPCO] Site PAR : 2 dossier(s) avec de nouvelles anomalies bloquantes"}
    run_link = f"{callbacks.base_url()}/dags/cfa_opco_daily/runs/{quote(R2, safe='')}"
    doubt = mails["[CFA-OPCO] 2 dossier(s) en doute après l'échéance du run"]
    assert doubt.rcpt_tos == ["ops@cfa.test"]
    assert "<td>OPCO Atlas</td><td>2</td>" in doubt.html and "TD0, TD1" in doubt.html
    assert run_link in doubt.html
    assert NIR not in doubt.raw   # the ledger's message quoted a NIR: masked
    akto = mails["[CFA-OPCO] OPCO AKTO : taux de refus 25 %"].html
    assert "5 refusé(s) sur 20 décision(s)" in akto and "seuil 20 %" in akto
    atlas = mails["[CFA-OPCO] OPCO Atlas : taux d'erreur 17 %"].html
    assert "2 envoi(s) en erreur sur 12" in atlas and "2 en doute" in atlas
    # the site digest goes to that site's quality lead, counts by rule and the run's report
    digest = mails["[CFA-OPCO] Site PAR : 2 dossier(s) avec de nouvelles anomalies bloquantes"]
    assert digest.rcpt_tos == ["qualite.paris@cfa.test"]
    assert "<td>CHAMP_OBLIGATOIRE</td><td>1</td>" in digest.html and "<td>DATE_INCOHERENTE</td><td>1</td>" in digest.html
    assert f"{callbacks.base_url()}/cfa-quality/runs/{quote(R2, safe='')}" in digest.html
    assert "SIRET_INVALIDE" not in digest.html and "LYO" not in digest.subject
    # the chat got the same four, as JSON
    assert sorted(h.body["kind"] for h in webhook.hits) == ["in_doubt", "rates", "rates", "site_anomalies"]
    site_hit = next(h for h in webhook.hits if h.body["kind"] == "site_anomalies")
    assert site_hit.body["site"] == "PAR" and site_hit.body["facts"]["par_regle"] == {
        "DATE_INCOHERENTE": 1, "CHAMP_OBLIGATOIRE": 1}
    # a retry of the task sends nothing again
    again = callbacks.send_run_alerts(_context(R2), connector=two_runs)
    assert all(s["channels"] == "déjà envoyée" for s in again["sent"]) and len(again["sent"]) == 4
    assert len(smtp.mails) == 4 and len(webhook.hits) == 4


def test_only_the_kinds_asked_for(two_runs, alerts_on, smtp, webhook):
    alerts_on(kinds=["rates"], refusal_rate_threshold=0.3)
    result = callbacks.send_run_alerts(_context(R2), connector=two_runs)
    assert [m.subject for m in smtp.mails] == ["[CFA-OPCO] OPCO Atlas : taux d'erreur 17 %"]
    assert len(result["sent"]) == 1


def test_key_alerts_at_most_once_per_repeat_period(connector_dsn, alerts_on, smtp, webhook):
    alerts_on(repeat_hours=24)
    text = ("La clé API de l'OPCO Atlas pour le SIREN 775672272 expire le 2026-09-20 (dans 12 jours) : demandez "
            "une nouvelle clé sur l'extranet de l'OPCO et mettez à jour la connexion opco_atlas_775672272")
    warnings = {"opco_atlas_775672272": text}
    assert callbacks.send_key_alerts(warnings, 30, connector=connector_dsn) == ["opco_atlas_775672272"]
    [mail] = smtp.mails
    assert mail.subject == "[CFA-OPCO] Clé API expire dans moins de 30 jours : OPCO Atlas, SIREN/SIRET 775672272"
    assert "expire le 2026-09-20" in mail.html and "Admin → Connections" in mail.html
    assert callbacks.send_key_alerts(warnings, 30, connector=connector_dsn) == []   # not again today
    assert len(smtp.mails) == 1 and len(webhook.hits) == 1
    alerts_on(repeat_hours=0)   # repeat every time
    assert callbacks.send_key_alerts(warnings, 30, connector=connector_dsn) == ["opco_atlas_775672272"]
    assert len(smtp.mails) == 2


def test_nothing_is_sent_when_alerts_are_off(two_runs, smtp, webhook, monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_CFA_OPCO_ALERTS", raising=False)
    assert callbacks.send_run_alerts(_context(R2), connector=two_runs) == {"enabled": False, "sent": []}
    assert callbacks.send_key_alerts({"opco_atlas_775672272": "La clé API … a expiré"}, 30,
                                     connector=two_runs) == []
    assert callbacks.key_expiry_days(30) == 30
    assert smtp.mails == [] and webhook.hits == []
    with connection(two_runs) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM alert_journal")
        assert cur.fetchone()[0] == 0


def test_key_expiry_days_from_the_settings(alerts_on):
    alerts_on(key_expiry_days=45)
    assert callbacks.key_expiry_days(30) == 45
    alerts_on(enabled=False, key_expiry_days=45)
    assert callbacks.key_expiry_days(30) == 30
