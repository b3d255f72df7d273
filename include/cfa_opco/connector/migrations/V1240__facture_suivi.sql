-- Issue 12, point 5: what each OPCO says of the invoices sent to it (GET /v2/factures/etats by
-- window where the OPCO serves it; the dossier's SOLDE elsewhere), kept per invoice with the
-- history of every change (append-only) and a watermark per connection.
CREATE TABLE IF NOT EXISTS opco_facture (
    conn_id             text NOT NULL,
    numero_facture      text NOT NULL,           -- the CFA's invoice number (numeroInterneFacture)
    opco_code           text NOT NULL,
    source_id           text,
    numero_interne      text,                    -- the dossier
    echeance_numero     integer,
    etat                text,                    -- the OPCO's word, as written
    etat_norm           text,                    -- REGLE, EN_COURS, REJETE; NULL = a word we do not know
    date_etat           text,
    montant             numeric(12,2),           -- invoiced, as the OPCO read it
    montant_regle       numeric(12,2),           -- actually paid (NULL: not paid, or not said)
    reference_virement  text,
    date_reglement      date,
    commentaire         text,
    motifs              jsonb,
    via                 text NOT NULL,           -- factures_etats_v2, dossier_solde
    read_at             timestamptz NOT NULL DEFAULT now(),
    changed_at          timestamptz NOT NULL DEFAULT now(),
    written_back_at     timestamptz,
    PRIMARY KEY (conn_id, numero_facture)
);
CREATE INDEX IF NOT EXISTS opco_facture_dossier ON opco_facture (source_id, numero_interne);

CREATE TABLE IF NOT EXISTS opco_facture_history (
    id                  bigserial PRIMARY KEY,
    conn_id             text NOT NULL,
    numero_facture      text NOT NULL,
    etat                text,
    etat_norm           text,
    date_etat           text,
    montant_regle       numeric(12,2),
    reference_virement  text,
    date_reglement      date,
    commentaire         text,
    motifs              jsonb,
    via                 text NOT NULL,
    run_id              text,
    observed_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS opco_facture_history_facture ON opco_facture_history (conn_id, numero_facture);
DROP TRIGGER IF EXISTS opco_facture_history_append_only ON opco_facture_history;
CREATE TRIGGER opco_facture_history_append_only BEFORE UPDATE OR DELETE ON opco_facture_history
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE IF NOT EXISTS facture_watermark (
    conn_id             text PRIMARY KEY,
    window_end          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
