-- Issue 12, point 3: the ERPs' invoices frozen per DAG run, as the source's factures mapping
-- returns them (config/sources/<source>_factures.sql) and read value by value in Python: an
-- unreadable value is kept NULL with its French reason in "illisible" (the invoice quality
-- suite reports it). "ligne" is the ERP's own row key: invoice numbers are typed by hand and
-- may be duplicated (the suite reports that too).
CREATE TABLE IF NOT EXISTS staged_facture (
    run_id            text NOT NULL,
    source_id         text NOT NULL,
    ligne             text NOT NULL,
    numero_facture    text,
    numero_interne    text,
    echeance_numero   integer,
    date_facture      date,
    montant           numeric(14,3),
    facture_siret     text,
    cfa_siret         text,
    site_code         text,
    echeance_date     date,
    echeance_montant  numeric(12,2),
    illisible         jsonb,
    staged_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_id, ligne)
);
CREATE INDEX IF NOT EXISTS staged_facture_dossier ON staged_facture (source_id, numero_interne);

-- the invoice gate's verdict per invoice of a run (rule codes reported)
CREATE TABLE IF NOT EXISTS facture_verdict (
    run_id            text NOT NULL,
    source_id         text NOT NULL,
    ligne             text NOT NULL,
    verdict           text NOT NULL,            -- TRANSMIT, TO_FIX
    rule_codes        text[],
    decided_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_id, ligne)
);
