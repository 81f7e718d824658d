"""results files -> comparison tables, findings and figures in every format (no torch)."""
