-- Issue 14, parts 2 and 3: the "Dossiers OPCO" view (cfa_opco.ui.dossiers) and key governance.

-- Which key a routed dossier used: its establishment's (SIRET) when one exists, else its
-- company's (SIREN). The conn id already names it; the scope says which rule chose it.
ALTER TABLE transmission_plan ADD COLUMN IF NOT EXISTS key_scope text
    CHECK (key_scope IS NULL OR key_scope IN ('SIRET', 'SIREN'));

-- What the follow-up DAG's check_keys task read of each OPCO key (/v2/cfakeyinfo), one row
-- per connection, replaced at every check. Never the key itself: the connection holds it.
CREATE TABLE IF NOT EXISTS opco_key_status (
    conn_id          text PRIMARY KEY,
    opco_code        text NOT NULL,
    scope            text NOT NULL CHECK (scope IN ('SIRET', 'SIREN')),
    siren            text,
    siret            text,                 -- SIRET-scoped keys only
    expires_on       date,                 -- dateFinValidite; NULL: unknown (not served, not read)
    status           text NOT NULL,        -- VALID, EXPIRING, EXPIRED, INVALID, NOT_CHECKED, NOT_SERVED
    message          text,                 -- the warning, in French (no secret: the hook scrubs it)
    checked_at       timestamptz NOT NULL DEFAULT now(),
    last_success_at  timestamptz           -- last successful key check (the view also reads the proofs)
);

-- the view: a dossier's latest DOSSIER intent (its current situation in the ledger)
CREATE INDEX IF NOT EXISTS transmission_dossier_last ON transmission (source_id, numero_interne, id DESC)
    WHERE operation = 'DOSSIER';
-- the view: today's activity and the 14-day trend
CREATE INDEX IF NOT EXISTS transmission_created ON transmission (created_at);
CREATE INDEX IF NOT EXISTS quality_verdict_decided ON quality_verdict (decided_at);
CREATE INDEX IF NOT EXISTS opco_state_change_observed ON opco_state_change (observed_at);
-- the keys page: last successful call per key (and the keys that ever answered, by a loose
-- index scan)
CREATE INDEX IF NOT EXISTS exchange_proof_conn_ok ON exchange_proof (conn_id, sent_at)
    WHERE http_status BETWEEN 200 AND 299;
