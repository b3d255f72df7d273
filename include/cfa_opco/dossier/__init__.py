"""The canonical dossier: one flat row per dossier, whatever ERP it comes from."""
