-- Alerts sent (cfa_opco.alerts.journal): one row per alert fingerprint, so that a retried
-- task does not send the same alert twice and a key alert is repeated at most once a day.
CREATE TABLE IF NOT EXISTS alert_journal (
    fingerprint  text PRIMARY KEY,
    kind         text NOT NULL,
    subject      text NOT NULL,
    channels     text[] NOT NULL DEFAULT '{}',
    sent_at      timestamptz NOT NULL DEFAULT now(),
    times        integer NOT NULL DEFAULT 1
);
