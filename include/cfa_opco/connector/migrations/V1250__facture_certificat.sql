-- Issue 12, point 4: AFDAS pays an échéance once it holds its certificat de réalisation, of type
-- Final for the schedule's last échéance and Intermediaire before. The ERP's schedule says which
-- échéance is the last (optional column echeance_derniere of a source's factures_sql); NULL when
-- the mapping does not say (the invoice then waits for its certificat with that reason).
-- The certificat covers a period: from the échéance's date to echeance_fin (the day before the
-- next échéance, or the contract's end).
ALTER TABLE staged_facture ADD COLUMN IF NOT EXISTS echeance_derniere boolean;
ALTER TABLE staged_facture ADD COLUMN IF NOT EXISTS echeance_fin date;
