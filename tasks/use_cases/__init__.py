"""Use cases: plain functions that open one unit of work and apply the domain's rules.

No Prefect here, and no adapter: each takes the ledger by its port
(:class:`domain.stores.Ledger`), and the @task in ``tasks/<area>.py`` wraps it.
"""
