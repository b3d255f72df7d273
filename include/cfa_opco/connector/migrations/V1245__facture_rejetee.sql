-- Issue 12, point 5: an invoice the OPCO rejected during its instruction (REJETE, read by the
-- invoice follow-up) frees its échéance: the CFA invoices it again under a new number. The
-- ledger row stays SENT (it was sent, and answered); released_at says the échéance is free, and
-- the "one live invoice per échéance" index no longer counts it.
ALTER TABLE transmission ADD COLUMN IF NOT EXISTS released_at timestamptz;
DROP INDEX IF EXISTS transmission_facture_echeance;
CREATE UNIQUE INDEX IF NOT EXISTS transmission_facture_echeance
    ON transmission (source_id, numero_interne, ((payload -> 'echeance' ->> 'numero')))
    WHERE operation = 'FACTURE' AND status IN ('PENDING', 'SENT') AND NOT forced AND released_at IS NULL;
