"""Use cases: plain functions that open one unit of work on the ledger and call the
domain's rules and the stores' methods in it (no Prefect, no integrations)."""
