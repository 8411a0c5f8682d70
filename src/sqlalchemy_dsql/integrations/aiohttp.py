"""aiohttp integration: the engine in ``cleanup_ctx``, a session per request, retried units of work.

Install with ``pip install "sqlalchemy-dsql[aiohttp]"``::

    from aiohttp import web
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy_dsql.integrations.aiohttp import (
        Database, error_middleware, get_or_404, json_body, path_param, read_session_for,
        session_for, transactional,
    )

    db = Database("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws")
    app = web.Application(middlewares=[error_middleware])
    app.cleanup_ctx.append(db.cleanup_ctx)

    async def read_pet(request: web.Request) -> web.Response:
        pet_id = path_param(request, "pet_id", UUID)
        async with read_session_for(request) as session:   # one round trip, no BEGIN/COMMIT
            pet = await get_or_404(session, Pet, pet_id)
            return web.json_response(pet.as_json())

    @transactional                                          # run again on each conflict
    async def book_visit(request: web.Request, session: AsyncSession) -> web.Response:
        visit_in = await json_body(request, VisitIn.model_validate)
        pet = await get_or_404(session, Pet, path_param(request, "pet_id", UUID))
        ...
        return web.json_response(visit.as_json(), status=201)

- :meth:`Database.cleanup_ctx` makes the engine at startup, stores the
  ``Database`` under the :data:`DATABASE` application key (sub-applications
  find it through ``request.config_dict``) and disposes the engine at
  cleanup.
- :func:`session_for` is a session in a transaction, committed when the
  ``async with`` block ends (so before the handler returns its response) and
  rolled back if the block raises. It does not retry: a conflict is answered
  with 409.
- :func:`read_session_for` is a session for reads: no ``BEGIN`` and no
  ``COMMIT``, one round trip per statement, **each statement its own
  snapshot**; a write through it raises
  :class:`~sqlalchemy_dsql.errors.ReadOnlyViolation` before anything is sent.
  ``read_session_for(request, snapshot=True)`` is one ``BEGIN READ ONLY``
  transaction instead, for reads that must agree, at two round trips more.
  Not retried; ``database(request).read(fn)`` retries a read.
- :func:`transactional` decorates ``handler(request, session)``: the whole
  handler runs in :func:`~sqlalchemy_dsql.run_transaction` and runs again,
  with a new session, on each conflict (SQLSTATE ``40001``, ``OC000``,
  ``OC001``, and a connection lost before COMMIT). Not retried: any other
  error; a connection lost during COMMIT (unless the policy says
  ``idempotent=True``); and nothing outside the database is undone. The
  body is read from the network once (aiohttp keeps it), and the response
  is sent only after the handler's transaction committed, so do not
  ``prepare()`` a streamed response inside it.
- :func:`error_middleware`: an unresolved conflict
  (:class:`~sqlalchemy_dsql.errors.RetriesExhausted`) becomes 409, a
  connection lost during COMMIT 503 ``commit_outcome_unknown``, other
  connection failures 503 ``database_unavailable``. :func:`json_body` and
  :func:`path_param` answer invalid input with 422, :func:`get_or_404` a
  missing row with 404, all as JSON ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn, TypeVar

try:
    from aiohttp import web
    from aiohttp.typedefs import Handler
except ImportError as error:
    raise ImportError(
        'sqlalchemy_dsql.integrations.aiohttp needs aiohttp: pip install "sqlalchemy-dsql[aiohttp]"'
    ) from error
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.interfaces import ORMOption

from ._database import Database as _Database
from ._errors import MAPPED, integrity_problem, log_problem, problem_for

__all__ = [
    "DATABASE",
    "Database",
    "database",
    "error_middleware",
    "get_or_404",
    "integrity_error_middleware",
    "json_body",
    "path_param",
    "read_session_for",
    "session_for",
    "transactional",
]

T = TypeVar("T")
R = TypeVar("R", bound=web.StreamResponse)


class Database(_Database):
    """An engine made and disposed through the application's ``cleanup_ctx``.

    ``Database(endpoint, **engine_kwargs)`` or ``Database(engine_factory=...)``,
    plus ``policy`` / ``on_retry`` / ``stats`` for the retried units of work.
    """

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """``app.cleanup_ctx.append(db.cleanup_ctx)``: the engine while the application runs."""
        async with self.connected():
            app[DATABASE] = self
            yield


DATABASE = web.AppKey("sqlalchemy_dsql.database", Database)
"""The application key of the started :class:`Database`."""


def database(request: web.Request) -> Database:
    """The request's application's :class:`Database` (for ``.engine`` and ``.run()``)."""
    return request.config_dict[DATABASE]


def session_for(request: web.Request) -> AbstractAsyncContextManager[AsyncSession]:
    """``async with session_for(request) as session``: one transaction, not retried."""
    return database(request).transaction()


def read_session_for(
    request: web.Request, *, snapshot: bool = False
) -> AbstractAsyncContextManager[AsyncSession]:
    """``async with read_session_for(request) as session``: reads, one round trip each."""
    return database(request).reading(snapshot=snapshot)


def transactional(
    handler: Callable[[web.Request, AsyncSession], Awaitable[R]],
) -> Callable[[web.Request], Awaitable[R]]:
    """Run ``handler(request, session)`` in a transaction, again on each conflict."""

    @functools.wraps(handler)
    async def retried(request: web.Request) -> R:
        async def unit_of_work(session: AsyncSession) -> R:
            return await handler(request, session)

        unit_of_work.__qualname__ = handler.__qualname__
        return await database(request).run(unit_of_work)

    return retried


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer unresolved conflicts with 409 and database outages with 503, as JSON."""
    try:
        return await handler(request)
    except MAPPED as error:
        status, body = problem_for(error)
        log_problem(request.method, request.path, status, body, error)
        return web.json_response(body, status=status)


@web.middleware
async def integrity_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a unique or foreign-key violation with 409 naming the constraint, as JSON.

    Opt in by adding it to the application's middlewares; other integrity
    errors (NOT NULL, CHECK) pass through.
    """
    try:
        return await handler(request)
    except exc.IntegrityError as error:
        answer = integrity_problem(error)
        if answer is None:
            raise
        status, body = answer
        log_problem(request.method, request.path, status, body, error)
        return web.json_response(body, status=status)


async def get_or_404(session: AsyncSession, entity: type[T], ident: Any, *options: ORMOption) -> T:
    """``session.get(entity, ident, options=options)``, or 404 when there is no such row.

    Pass loader options (``selectinload(Owner.pets)``) for relationships the
    handler reads: an ``AsyncSession`` cannot load them lazily.
    """
    found = await session.get(entity, ident, options=options)
    if found is None:
        _fail(web.HTTPNotFound, "not_found", f"{entity.__name__} {ident} not found")
    return found


async def json_body(request: web.Request, parse: Callable[[Any], T]) -> T:
    """The JSON body passed through ``parse``; 422 if it is not JSON or ``parse`` refuses it.

    ``parse`` refuses with ``ValueError`` or ``TypeError``: a pydantic
    model's ``model_validate`` does (its errors become the 422's ``detail``),
    as does a dataclass or a function of your own.
    """
    try:
        data = await request.json()
    except ValueError:
        _fail(web.HTTPUnprocessableEntity, "validation", "the body is not valid JSON")
    return _validated(parse, data)


def path_param(request: web.Request, name: str, parse: Callable[[str], T]) -> T:
    """``parse(request.match_info[name])``; 422 if it raises ``ValueError`` or ``TypeError``."""
    return _validated(parse, request.match_info[name])


def _validated(parse: Callable[[Any], T], value: Any) -> T:
    try:
        return parse(value)
    except (ValueError, TypeError) as error:
        _fail(web.HTTPUnprocessableEntity, "validation", _validation_detail(error))


def _validation_detail(error: ValueError | TypeError) -> Any:
    try:
        from pydantic import ValidationError
    except ImportError:
        return str(error)
    if isinstance(error, ValidationError):
        # Without the input: it can be large, and it is the client's own anyway.
        return error.errors(include_url=False, include_context=False, include_input=False)
    return str(error)


def _fail(error_class: type[web.HTTPError], error: str, detail: Any) -> NoReturn:
    raise error_class(
        text=json.dumps({"error": error, "detail": detail}), content_type="application/json"
    )
