-- Training agreement (convention de formation) of a contract: its costs as the CFA agreed them
-- with the employer (pedagogical cost, amount per contract year, first equipment, meals and
-- lodging where the CFA provides them) and the period it covers.
CREATE TABLE convention_formation (
    contrat_id            integer PRIMARY KEY REFERENCES contrat(id) ON DELETE CASCADE,
    cout_pedagogique      numeric(10,2),
    montant_annee_1       numeric(10,2),
    montant_annee_2       numeric(10,2),
    montant_annee_3       numeric(10,2),
    montant_annee_4       numeric(10,2),
    frais_premier_equipement numeric(10,2),
    frais_restauration    numeric(10,2),
    frais_hebergement     numeric(10,2),
    date_debut            date,
    date_fin              date,
    modifie_le            timestamptz NOT NULL DEFAULT now()
);
