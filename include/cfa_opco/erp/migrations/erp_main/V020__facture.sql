-- The CFA's invoices (factures) to the OPCOs, one per échéance invoiced, as "Gestion CFA" holds
-- them: the invoice number is typed by the finance team (nothing stops a duplicate), the
-- amount keeps whatever decimals were typed, the échéance number may be left empty, and the
-- invoicing establishment's SIRET is typed on the invoice.
CREATE TABLE facture (
    id               serial PRIMARY KEY,
    numero_facture   text NOT NULL,
    contrat_id       integer NOT NULL REFERENCES contrat(id),
    echeance_numero  smallint,
    date_facture     date NOT NULL,
    montant          numeric(12,3) NOT NULL,
    siret_cfa        text,
    statut           text NOT NULL DEFAULT 'EMISE',      -- EMISE, TRANSMISE, REGLEE (written back)
    modifie_le       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX facture_contrat ON facture (contrat_id);
