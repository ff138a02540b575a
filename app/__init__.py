"""The webstack FastAPI application: items and notes on PostgreSQL, cached in Valkey.

See ``app/README.md`` for the environment it reads and how it is run.
"""
