-- Supporting documents (pièces) of the "Gestion CFA" ERP, one row per document:
-- numero_interne, type_piece, nom_fichier, type_mime, and the file either as bytes
-- (contenu) or as a path on disk (chemin, relative to the source's files_root).
SELECT c.numero_interne, p.id::text AS piece_ref, p.type_piece, p.nom_fichier, p.type_mime,
       p.contenu, p.chemin, p.depose_le
FROM piece p JOIN contrat c ON c.id = p.contrat_id
WHERE c.numero_interne = ANY(%(numeros)s)
ORDER BY c.numero_interne, p.id
