-- The connector's own database, part 3: state follow-up (cfa_opco.followup).
-- The sync applies what an OPCO reports per key (connection) and numéro interne: one lookup
-- per reported dossier, whatever the stock of dossiers.
CREATE INDEX IF NOT EXISTS opco_dossier_conn_numero ON opco_dossier (conn_id, numero_interne);
-- The sensor follows the dossiers of one run (first_run_id).
CREATE INDEX IF NOT EXISTS opco_dossier_first_run ON opco_dossier (first_run_id)
    WHERE etat NOT IN ('ENGAGE', 'REFUSE', 'ANNULE', 'SOLDE', 'RUPTU');
