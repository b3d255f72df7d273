-- The convention de formation's costs and dates travel with the dossier (cfa_opco.dossier.model
-- convention_* columns): extracted by the source's dossier mapping, checked by the gate's
-- CONVENTION_* rules, sent by POST /v1/conventions once the OPCO holds the dossier.
ALTER TABLE staged_dossier
    ADD COLUMN IF NOT EXISTS convention_cout_pedagogique  numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_cout_annee1       numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_cout_annee2       numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_cout_annee3       numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_cout_annee4       numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_frais_equipement  numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_frais_repas       numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_frais_hebergement numeric(10,2),
    ADD COLUMN IF NOT EXISTS convention_date_debut        date,
    ADD COLUMN IF NOT EXISTS convention_date_fin          date;
