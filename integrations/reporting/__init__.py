"""Reports rendered for people: charts and markdown (no Prefect, no ledger)."""
