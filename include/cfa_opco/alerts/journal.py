"""What was already sent (the connector's ``alert_journal``): an alert of a run is sent
once, whatever the retries; a key alert at most once per ``repeat_hours``."""
from __future__ import annotations

import logging

from cfa_opco.connector import migrate
from cfa_opco.db.connect import connection

log = logging.getLogger(__name__)


def _ensure(connector: str) -> None:
    migrate(connector)


def already_sent(connector: str, fingerprint: str, repeat_hours: int | None = None) -> bool:
    """True when ``fingerprint`` was sent (within ``repeat_hours`` when given)."""
    try:
        with connection(connector) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('alert_journal') IS NOT NULL")
            if not cur.fetchone()[0]:
                return False
            cur.execute("""SELECT 1 FROM alert_journal WHERE fingerprint = %s
                             AND (%s::int IS NULL OR sent_at > now() - make_interval(hours => %s::int))""",
                        (fingerprint, repeat_hours, repeat_hours))
            return cur.fetchone() is not None
    except Exception as exc:   # the journal unreadable: better a repeated alert than a lost one
        log.warning("alert journal unreadable (%s): sending %s anyway", type(exc).__name__, fingerprint)
        return False


def record(connector: str, fingerprint: str, kind: str, subject: str, channels: list[str]) -> None:
    try:
        _ensure(connector)
        with connection(connector) as conn, conn.cursor() as cur:
            cur.execute("""INSERT INTO alert_journal (fingerprint, kind, subject, channels) VALUES (%s, %s, %s, %s)
                           ON CONFLICT (fingerprint) DO UPDATE SET subject = EXCLUDED.subject,
                               channels = EXCLUDED.channels, sent_at = now(), times = alert_journal.times + 1""",
                        (fingerprint, kind, subject[:500], channels))
    except Exception as exc:
        log.warning("alert %s sent but not journaled (%s)", fingerprint, type(exc).__name__)
