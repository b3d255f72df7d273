"""What each OPCO key's last check said (table ``opco_key_status``, migration V470): the
expiry date the OPCO gives (``/v2/cfakeyinfo``), the status and the warning, per connection.

Written by the follow-up DAG's check_keys task and by every transmission batch (which
checks its key before sending); read by the "Dossiers OPCO" view's keys page. Never the key
itself: the Airflow connection holds it, and rotating a key is a change of that connection.
"""
from __future__ import annotations

import datetime as dt

from cfa_opco.db.connect import connection
from cfa_opco.providers.opco.norm import key_scope_of, parse_conn_id

_UPSERT = """
INSERT INTO opco_key_status (conn_id, opco_code, scope, siren, siret, expires_on, status, message, checked_at,
                             last_success_at)
VALUES (%(conn_id)s, %(opco)s, %(scope)s, %(siren)s, %(siret)s, %(expires_on)s, %(status)s, %(message)s, now(),
        CASE WHEN %(ok)s THEN now() END)
ON CONFLICT (conn_id) DO UPDATE SET
    opco_code = EXCLUDED.opco_code, scope = EXCLUDED.scope, siren = EXCLUDED.siren, siret = EXCLUDED.siret,
    expires_on = COALESCE(EXCLUDED.expires_on, CASE WHEN EXCLUDED.status = 'NOT_CHECKED'
                                                    THEN opco_key_status.expires_on END),
    status = EXCLUDED.status, message = EXCLUDED.message, checked_at = EXCLUDED.checked_at,
    last_success_at = COALESCE(EXCLUDED.last_success_at, opco_key_status.last_success_at)
"""


def record(connector: str, conn_id: str, status: str, expires_on: dt.date | None = None,
           message: str | None = None) -> None:
    """Replace the connection's row with this check's outcome (status VALID, EXPIRING,
    EXPIRED, INVALID, NOT_SERVED or NOT_CHECKED: the check itself failed — the expiry date
    known from an earlier check is kept)."""
    code, ident = parse_conn_id(conn_id)
    if code is None:
        return
    scope = key_scope_of(conn_id)
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('opco_key_status') IS NOT NULL")
        if not cur.fetchone()[0]:     # a connector database older than V470
            return
        cur.execute(_UPSERT, {"conn_id": conn_id, "opco": code, "scope": scope, "siren": ident[:9],
                              "siret": ident if scope == "SIRET" else None, "expires_on": expires_on,
                              "status": status, "message": (message or None) and message[:1000],
                              "ok": status in ("VALID", "EXPIRING")})
