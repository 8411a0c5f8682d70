"""Web-framework integrations: one engine per application, one transaction per request.

- :mod:`sqlalchemy_dsql.integrations.fastapi` (``pip install "sqlalchemy-dsql[fastapi]"``):
  a ``Database`` whose ``lifespan`` makes and disposes the engine, a ``Depends``
  session that commits before the response is sent, a ``transactional``
  route decorator that retries the request's unit of work on DSQL's
  optimistic-concurrency conflicts, and exception handlers that answer a
  conflict with 409 and a database outage with 503.
- :mod:`sqlalchemy_dsql.integrations.aiohttp` (``pip install "sqlalchemy-dsql[aiohttp]"``):
  the same through ``cleanup_ctx``, ``session_for(request)``, a
  ``transactional`` handler decorator and ``error_middleware``.

Importing this package imports neither framework; see ``docs/integrations.md``.
"""
