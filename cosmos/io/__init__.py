"""Safe file output: atomic writes and run provenance."""
