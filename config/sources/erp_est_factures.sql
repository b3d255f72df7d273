-- Mapping of "Ypso Formation" (erp_est) invoices onto the canonical invoice columns: the
-- échéance number and dates are typed text in this product (DD/MM/YYYY), returned as typed
-- and read by the connector; the schedule is T_ECHEANCIER (its last échéance: a Final
-- certificat de réalisation for AFDAS, with the period it covers), the site T_SITE.
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
    ech."ECH_MONTANT"::text   AS echeance_montant,
    (ech."ECH_NUM" = (SELECT max(x."ECH_NUM") FROM "T_ECHEANCIER" x WHERE x."CTR_ID" = f."CTR_ID"))::text
                              AS echeance_derniere,
    (CASE WHEN ech."ECH_NUM" IS NULL THEN NULL WHEN nxt.d IS NOT NULL THEN fin.d - 1 ELSE fin.d END)::text
                              AS echeance_fin
FROM "T_FACTURE" f
JOIN "T_CONTRAT" c ON c."CTR_ID" = f."CTR_ID"
JOIN "T_ACTION" a ON a."ACT_ID" = c."ACT_ID"
JOIN "T_SITE" si ON si."SITE_ID" = a."SITE_ID"
LEFT JOIN "T_ECHEANCIER" ech ON ech."CTR_ID" = f."CTR_ID" AND f."FAC_ECH" ~ '^\s*\d+\s*$'
     AND ech."ECH_NUM" = trim(f."FAC_ECH")::int
-- the period an échéance covers ends the day before the next one, or with the contract: a guarded
-- conversion of that free-text date (NULL for an impossible one: the invoice then says so)
LEFT JOIN LATERAL (SELECT x."ECH_DATE" AS d FROM "T_ECHEANCIER" x WHERE x."CTR_ID" = f."CTR_ID"
                   AND x."ECH_NUM" > ech."ECH_NUM" ORDER BY x."ECH_NUM" LIMIT 1) nxt ON true
LEFT JOIN LATERAL (
    SELECT CASE WHEN z.s ~ '^\d{2}/(0[1-9]|1[0-2])/[1-9]\d{3}$' THEN
                CASE WHEN substr(z.s, 1, 2)::int BETWEEN 1 AND extract(day from
                          make_date(substr(z.s, 7, 4)::int, substr(z.s, 4, 2)::int, 1) + interval '1 month - 1 day')
                     THEN to_date(z.s, 'DD/MM/YYYY') END END AS d
    FROM (SELECT COALESCE(nxt.d, c."CTR_DFIN") AS s) z) fin ON true
