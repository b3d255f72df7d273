-- What the OPCO says of each invoice, written back by the connector (cfa_opco.facture_followup):
-- its state in the OPCO's words, the amount actually paid, the transfer, the OPCO's comment.
ALTER TABLE facture ADD COLUMN IF NOT EXISTS etat_opco text;
ALTER TABLE facture ADD COLUMN IF NOT EXISTS montant_regle numeric(12,2);
ALTER TABLE facture ADD COLUMN IF NOT EXISTS date_reglement date;
ALTER TABLE facture ADD COLUMN IF NOT EXISTS reference_virement text;
ALTER TABLE facture ADD COLUMN IF NOT EXISTS commentaire_opco text;
ALTER TABLE facture ADD COLUMN IF NOT EXISTS lu_opco_le timestamptz;
