-- Mapping of "Ypso Formation" (erp_est) invoices onto the canonical invoice columns: the
-- échéance number and dates are typed text in this product (DD/MM/YYYY), returned as typed
-- and read by the connector; the schedule is T_ECHEANCIER, the site T_SITE.
SELECT
    f."FAC_ID"::text          AS ligne,
    f."FAC_NUM"               AS numero_facture,
    c."CTR_REF"               AS numero_interne,
    f."FAC_ECH"               AS echeance_numero,
    f."FAC_DATE"              AS date_facture,
    f."FAC_MT"::text          AS montant,
    f."FAC_SIRET"             AS facture_siret,
    si."SITE_SIRET"           AS cfa_siret,
    'EST-' || si."SITE_ID"    AS site_code,
    ech."ECH_DATE"            AS echeance_date,
    ech."ECH_MONTANT"::text   AS echeance_montant
FROM "T_FACTURE" f
JOIN "T_CONTRAT" c ON c."CTR_ID" = f."CTR_ID"
JOIN "T_ACTION" a ON a."ACT_ID" = c."ACT_ID"
JOIN "T_SITE" si ON si."SITE_ID" = a."SITE_ID"
LEFT JOIN "T_ECHEANCIER" ech ON ech."CTR_ID" = f."CTR_ID" AND f."FAC_ECH" ~ '^\s*\d+\s*$'
     AND ech."ECH_NUM" = trim(f."FAC_ECH")::int
