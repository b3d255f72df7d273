"""What the gate holds back without quarantining the dossier: a convention de formation it
reported (``CONVENTION_*`` rules, warnings by default) leaves only once the ERP corrects it.
(Light on purpose: the outbox imports it, and :mod:`.gate` imports great_expectations.)"""
from __future__ import annotations


def held_conventions(conn, run_id: str) -> dict[tuple[str, str], str]:
    """{(source_id, numero_interne): the gate's reasons} for the conventions de formation it
    reported in this run (``CONVENTION_*`` rules): those are not sent."""
    with conn.cursor() as cur:
        cur.execute("""SELECT source_id, numero_interne, string_agg(message, ' ; ' ORDER BY rule_code)
                       FROM quality_anomaly WHERE run_id = %s AND rule_code LIKE 'CONVENTION\\_%%'
                       GROUP BY source_id, numero_interne""", (run_id,))
        out = {(src, num): why for src, num, why in cur.fetchall()}
    conn.commit()
    return out
