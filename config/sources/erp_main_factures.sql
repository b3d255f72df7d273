-- Mapping of "Gestion CFA" (erp_main) invoices onto the canonical invoice columns
-- (cfa_opco.factures.COLUMNS): one row per invoice, with the échéance the CFA holds for it
-- (its schedule, echeance) and the establishment that teaches the contract (its SIRET and
-- site code), and whether that échéance is the schedule's last (the certificat de réalisation
-- AFDAS asks for is then Final). Values are read by the connector in Python (dates, amounts with 3 decimals).
SELECT
    f.id::text                AS ligne,
    f.numero_facture          AS numero_facture,
    c.numero_interne          AS numero_interne,
    f.echeance_numero::text   AS echeance_numero,
    f.date_facture::text      AS date_facture,
    f.montant::text           AS montant,
    f.siret_cfa               AS facture_siret,
    e.siret                   AS cfa_siret,
    e.code_site               AS site_code,
    ech.date_echeance::text   AS echeance_date,
    ech.montant::text         AS echeance_montant,
    (ech.numero = (SELECT max(x.numero) FROM echeance x WHERE x.contrat_id = f.contrat_id))::text
                              AS echeance_derniere,
    -- the period the échéance covers ends the day before the next one, or with the contract
    CASE WHEN ech.id IS NOT NULL THEN
         COALESCE((SELECT min(x.date_echeance) FROM echeance x WHERE x.contrat_id = f.contrat_id
                   AND x.numero > ech.numero) - 1, c.date_fin)::text END
                              AS echeance_fin
FROM facture f
JOIN contrat c ON c.id = f.contrat_id
JOIN session_formation s ON s.id = c.session_id
JOIN etablissement e ON e.id = s.etablissement_id
LEFT JOIN echeance ech ON ech.contrat_id = f.contrat_id AND ech.numero = f.echeance_numero
