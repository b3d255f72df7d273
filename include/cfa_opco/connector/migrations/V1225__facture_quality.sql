-- Issue 12, point 3: the invoices' anomalies found by the GX suite cfa_opco_facture, per run,
-- in French (the quality reports' "Factures à corriger" sections and CSV files read them).
CREATE TABLE IF NOT EXISTS facture_anomaly (
    run_id          text NOT NULL,
    source_id       text NOT NULL,
    ligne           text NOT NULL,
    numero_facture  text,
    numero_interne  text,
    site_code       text,
    rule_code       text NOT NULL,
    severity        text NOT NULL,
    field           text,
    valeur          text,
    message         text NOT NULL
);
CREATE INDEX IF NOT EXISTS facture_anomaly_run ON facture_anomaly (run_id, site_code);
