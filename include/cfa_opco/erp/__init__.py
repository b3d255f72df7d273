"""The demo CFA management databases (ERP): schemas, seeded generator, loaders."""
