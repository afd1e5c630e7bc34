"""Use cases: plain functions that open one unit of work and apply domain rules.

Each module is named for its area. A use case takes the ledger (typed by the Protocols
in :mod:`domain.stores`) and the ports it needs, opens ``with ledger.transaction() as
uow:`` where its writes must land together, and calls domain rules and store methods;
the ``@task`` in ``tasks/<area>.py`` is a thin wrapper around it. No Prefect here, and
no import of ``integrations``.
"""
