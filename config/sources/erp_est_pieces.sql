-- Supporting documents of the "Ypso Formation" ERP: always files on the file server.
SELECT c."CTR_REF" AS numero_interne, d."DOC_ID"::text AS piece_ref,
       CASE d."DOC_TYPE" WHEN 'CONV' THEN 'CONVENTION_FORMATION' WHEN 'CERFA' THEN 'CERFA_SIGNE' ELSE 'AUTRE' END AS type_piece,
       regexp_replace(d."DOC_FICHIER", '^.*/', '') AS nom_fichier,
       'application/pdf' AS type_mime, NULL::bytea AS contenu, d."DOC_FICHIER" AS chemin,
       d."DOC_DATE" AS depose_le
FROM "T_DOCUMENT" d JOIN "T_CONTRAT" c ON c."CTR_ID" = d."CTR_ID"
WHERE c."CTR_REF" = ANY(%(numeros)s)
ORDER BY 1, d."DOC_ID"
