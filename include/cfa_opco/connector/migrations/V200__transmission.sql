-- The connector's own database, part 2: the transmission ledger (outbox), what each OPCO
-- says of each dossier, and the append-only proof of every exchange.

-- One row per intent to send one thing (a dossier, a document, a rupture...) with one
-- content. The row is written BEFORE the request leaves, its outcome AFTER: a crash in
-- between leaves an IN_DOUBT row that the next attempt resolves by reading the OPCO first.
CREATE TABLE transmission (
    id              bigserial PRIMARY KEY,
    run_id          text NOT NULL,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    operation       text NOT NULL,        -- DOSSIER, PIECE, CONVENTION, RUPTURE
    opco_code       text,
    cfa_siren       text,
    conn_id         text,
    content_hash    text NOT NULL,        -- SHA-256 of the canonical payload
    payload         jsonb,                -- exactly what is (to be) sent; documents: metadata only
    status          text NOT NULL,        -- PENDING, SENT, REJECTED, BLOCKED, FAILED, DRY_RUN
    forced          boolean NOT NULL DEFAULT false,
    force_reason    text,
    requested_by    text,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    completed_at    timestamptz,
    http_status     integer,
    numero_externe  text,
    numero_deca     text,
    erreurs         jsonb,                -- the OPCO's erreurs, or our reason when BLOCKED
    message         text
);
-- exactly once per content: a second intent for the same content is refused by the
-- database itself (forced resends, asked by an operator with a reason, are the exception)
CREATE UNIQUE INDEX transmission_once ON transmission (source_id, numero_interne, operation, content_hash)
    WHERE NOT forced AND status NOT IN ('BLOCKED', 'FAILED', 'DRY_RUN');
CREATE INDEX transmission_run ON transmission (run_id);
CREATE INDEX transmission_dossier ON transmission (source_id, numero_interne);

-- What the OPCO says of each dossier it received: current state (one row per dossier)
CREATE TABLE opco_dossier (
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    opco_code       text NOT NULL,
    cfa_siren       text NOT NULL,
    conn_id         text NOT NULL,
    nature          text,
    numero_externe  text,
    numero_deca     text,
    etat            text NOT NULL,
    etat_at         timestamptz,
    motifs          jsonb,
    anomalies       jsonb,
    engagement      jsonb,
    echeances       jsonb,
    first_run_id    text,
    sent_at         timestamptz,
    last_checked_at timestamptz,
    PRIMARY KEY (source_id, numero_interne)
);
CREATE INDEX opco_dossier_open ON opco_dossier (conn_id)
    WHERE etat NOT IN ('ENGAGE', 'REFUSE', 'ANNULE', 'SOLDE', 'RUPTU');
CREATE UNIQUE INDEX opco_dossier_key ON opco_dossier (opco_code, numero_interne);

-- Every state change seen, with its time (append-only)
CREATE TABLE opco_state_change (
    id              bigserial PRIMARY KEY,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    opco_code       text NOT NULL,
    etat            text NOT NULL,
    etat_at         timestamptz,          -- the OPCO's dateEtat
    observed_at     timestamptz NOT NULL DEFAULT now(),
    motifs          jsonb,
    anomalies       jsonb,
    via             text NOT NULL         -- post, etats_v2, liste_v1, dossier_v2
);
CREATE INDEX opco_state_change_dossier ON opco_state_change (source_id, numero_interne);

-- Per key (connection), up to when state changes have been read
CREATE TABLE sync_watermark (
    conn_id         text PRIMARY KEY,
    window_end      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Proof of exchange: one row per HTTP request, append-only
CREATE TABLE exchange_proof (
    id               bigserial PRIMARY KEY,
    run_id           text,
    conn_id          text NOT NULL,
    opco_code        text NOT NULL,
    cfa_siren        text,
    method           text NOT NULL,
    route            text NOT NULL,       -- path below the base URL, query string included
    numero_interne   text,
    attempt          integer NOT NULL DEFAULT 1,
    sent_at          timestamptz NOT NULL,
    received_at      timestamptz,
    request_sha256   text,                -- SHA-256 of the canonical payload sent (null: no body)
    http_status      integer,             -- null: no answer (timeout, dropped connection)
    error            text,
    numero_externe   text,
    numero_deca      text,
    response_sha256  text
);
CREATE INDEX exchange_proof_dossier ON exchange_proof (numero_interne);
CREATE INDEX exchange_proof_run ON exchange_proof (run_id);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: rows cannot be updated or deleted', TG_TABLE_NAME;
END $$;
CREATE TRIGGER exchange_proof_append_only BEFORE UPDATE OR DELETE ON exchange_proof
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER opco_state_change_append_only BEFORE UPDATE OR DELETE ON opco_state_change
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- The routing of a run's dossiers, decided once by the plan task: the mapped transmission
-- tasks read their (OPCO, SIREN) share from here, so a rerun sends the same split.
CREATE TABLE transmission_plan (
    run_id          text NOT NULL,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    nature          text NOT NULL,
    decision        text NOT NULL,        -- ROUTED, NEEDS_HUMAN, NOT_SERVED, FILTERED
    opco_code       text,
    cfa_siren       text,
    conn_id         text,
    reason          text,
    forced          boolean NOT NULL DEFAULT false,
    force_reason    text,
    planned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_id, numero_interne)
);
CREATE INDEX transmission_plan_conn ON transmission_plan (run_id, conn_id);
