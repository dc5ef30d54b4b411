"""Application parts that are not marketplaces: a package each, declaring `PART` (adapters.Part)."""
