-- Issue 12, point 4: never two invoices for one échéance. Besides the ledger's exactly-once
-- index per content (transmission_once), at most one live FACTURE intent (in doubt or sent)
-- per dossier and échéance: a second invoice of the same échéance cannot even be recorded as
-- an intent, whichever worker tries (the flow then records it BLOCKED, with why).
CREATE UNIQUE INDEX IF NOT EXISTS transmission_facture_echeance
    ON transmission (source_id, numero_interne, ((payload -> 'echeance' ->> 'numero')))
    WHERE operation = 'FACTURE' AND status IN ('PENDING', 'SENT') AND NOT forced;
CREATE INDEX IF NOT EXISTS transmission_facture_numero
    ON transmission (source_id, ((payload ->> 'numeroInterneFacture'))) WHERE operation = 'FACTURE';

-- What the send_invoices task decided for each invoice of a run before anything left: SEND
-- (to conn_id), or the bucket it stays in (TO_FIX, WAITING_ENGAGE, NOT_TRANSMISSIBLE, FILTERED)
-- with the reason in French. The run's invoice buckets join it with the ledger.
CREATE TABLE IF NOT EXISTS facture_plan (
    run_id          text NOT NULL,
    source_id       text NOT NULL,
    ligne           text NOT NULL,
    decision        text NOT NULL,
    opco_code       text,
    conn_id         text,
    reason          text,
    planned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_id, ligne)
);
