-- Ypso Formation's invoices: one row per échéance invoiced, legacy style like the other
-- T_ tables — the échéance number and the date are typed text (DD/MM/YYYY), the amount keeps
-- three decimals, the establishment's SIRET is typed on the invoice.
CREATE TABLE "T_FACTURE" (
    "FAC_ID"    integer PRIMARY KEY,
    "FAC_NUM"   varchar(30) NOT NULL,
    "CTR_ID"    integer REFERENCES "T_CONTRAT"("CTR_ID"),
    "FAC_ECH"   varchar(4),
    "FAC_DATE"  varchar(10),
    "FAC_MT"    numeric(12,3),
    "FAC_SIRET" varchar(20),
    "FAC_MAJ"   timestamp NOT NULL DEFAULT now()
);
