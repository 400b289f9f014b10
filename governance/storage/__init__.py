"""The governance store: one SQL database that every replica shares (an edge package).

- :mod:`~governance.storage.store`: the connection pool, transactions, timeouts and
  error translation (SQLite and PostgreSQL);
- :mod:`~governance.storage.schema` and ``migrations/``: the tables, created and
  upgraded by Alembic when a store opens;
- :mod:`~governance.storage.ledger`: the allocation ledger (reservations, their life
  cycle, usage per scope, denials) and its reports;
- :mod:`~governance.storage.revisions`: recording a configuration (``gpupool apply``,
  ``gpupool set quota``), refused below what the ledger has in use;
- :mod:`~governance.storage.source`: the configuration in force, as readers keep it;
- :mod:`~governance.storage.retention`: pruning old denials.

Only this package (and the command line) imports SQLAlchemy and Alembic; the pure core
of :mod:`governance` never imports it (import-linter checks both, pyproject.toml).
"""
