-- Issue 10, points 2, 6 and 9: nothing silently held, follow-up that says when it cannot read.

-- An avenant waiting for its base contract (quarantined, not yet sent, not yet accepted)
-- gets a ledger row with status WAITING and the reason; like BLOCKED it is a report, not an
-- intent to send, so it stays out of the exactly-once index.
DROP INDEX IF EXISTS transmission_once;
CREATE UNIQUE INDEX transmission_once ON transmission (source_id, numero_interne, operation, content_hash)
    WHERE NOT forced AND status NOT IN ('BLOCKED', 'FAILED', 'DRY_RUN', 'WAITING');
-- the in-doubt intents the follow-up DAG keeps settling
CREATE INDEX IF NOT EXISTS transmission_pending ON transmission (conn_id) WHERE status = 'PENDING';

-- Follow-up health per key (OPCO connection): consecutive polls that could not be read.
CREATE TABLE IF NOT EXISTS followup_poll (
    conn_id               text PRIMARY KEY,
    opco_code             text,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    total_failures        bigint NOT NULL DEFAULT 0,
    last_error            text,
    last_failure_at       timestamptz,
    last_success_at       timestamptz,
    impossible_since      timestamptz          -- set once the failure limit was passed
);

-- "suivi impossible": the dossier's key could not be read for too many polls in a row
ALTER TABLE opco_dossier ADD COLUMN IF NOT EXISTS suivi_impossible_at timestamptz;
ALTER TABLE opco_dossier ADD COLUMN IF NOT EXISTS suivi_impossible_reason text;
