-- Issue 12, point 2: the payment schedule (échéancier) of each dossier the OPCO engaged, read
-- back from the OPCO (GET /v2/dossiers?numeroInterne=, its "echeances" list), kept per
-- échéance with the history of every change (append-only), and when it was last read.
CREATE TABLE IF NOT EXISTS opco_echeance (
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    numero          integer NOT NULL,          -- the échéance's number at the OPCO (1, 2...)
    opco_code       text NOT NULL,
    date_echeance   date,                      -- the OPCO's dateEcheance (its start)
    date_fin        date,                      -- when the OPCO gives one
    montant         numeric(12,2),
    etat            text,                      -- A_FACTURER, FACTUREE, REGLEE, ANNULEE... as the OPCO says
    read_at         timestamptz NOT NULL DEFAULT now(),
    changed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, numero_interne, numero)
);
CREATE INDEX IF NOT EXISTS opco_echeance_dossier ON opco_echeance (numero_interne);

CREATE TABLE IF NOT EXISTS opco_echeance_history (
    id              bigserial PRIMARY KEY,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    numero          integer NOT NULL,
    opco_code       text NOT NULL,
    date_echeance   date,
    date_fin        date,
    montant         numeric(12,2),
    etat            text,
    change          text NOT NULL,             -- NEW, CHANGED, GONE (no longer in the OPCO's schedule)
    observed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS opco_echeance_history_dossier ON opco_echeance_history (source_id, numero_interne);
DROP TRIGGER IF EXISTS opco_echeance_history_append_only ON opco_echeance_history;
CREATE TRIGGER opco_echeance_history_append_only BEFORE UPDATE OR DELETE ON opco_echeance_history
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- when the schedule was last read, and why it could not be (French, naming the OPCO)
ALTER TABLE opco_dossier ADD COLUMN IF NOT EXISTS echeances_read_at timestamptz;
ALTER TABLE opco_dossier ADD COLUMN IF NOT EXISTS echeances_error text;
