-- The payment schedule as the OPCO gives it, written back by the connector (cfa_opco.echeances):
-- the OPCO's state of each échéance and when it was read.
ALTER TABLE echeance ADD COLUMN IF NOT EXISTS etat_opco text;
ALTER TABLE echeance ADD COLUMN IF NOT EXISTS lu_opco_le timestamptz;
