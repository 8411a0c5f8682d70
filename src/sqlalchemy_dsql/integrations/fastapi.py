"""FastAPI integration: the engine in the lifespan, a session per request, retried units of work.

Install with ``pip install "sqlalchemy-dsql[fastapi]"`` (FastAPI 0.121 or newer)::

    from typing import Annotated
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy_dsql.integrations.fastapi import Database, add_exception_handlers, get_or_404

    db = Database("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws")
    app = FastAPI(lifespan=db.lifespan)
    add_exception_handlers(app)
    DBSession = Annotated[AsyncSession, db.session]
    ReadSession = Annotated[AsyncSession, db.read_session]

    @app.get("/pets/{pet_id}")
    async def read_pet(pet_id: UUID, session: ReadSession) -> PetOut:   # one round trip
        return PetOut.model_validate(await get_or_404(session, Pet, pet_id))

    @app.post("/pets/{pet_id}/visits", status_code=201)
    @db.transactional
    async def book_visit(session: AsyncSession, pet_id: UUID, body: VisitIn) -> VisitOut:
        pet = await get_or_404(session, Pet, pet_id)     # run again on each conflict
        ...

- :attr:`Database.lifespan` makes the engine at startup and disposes it at
  shutdown; inside your own lifespan write ``async with db.lifespan(app):``.
- :attr:`Database.session` is a ``Depends`` (``scope="function"``) that
  yields an ``AsyncSession`` in a transaction, commits it when the endpoint
  returns and rolls it back when the endpoint raises. The commit runs after
  the endpoint and the response's serialization but **before the response
  is sent**, so a COMMIT that fails (DSQL reports conflicts at COMMIT) is
  answered with an error, never with a 2xx for lost data. It does not retry:
  a conflict is answered with 409.
- :attr:`Database.read_session` is a ``Depends`` that yields an
  ``AsyncSession`` for reads: no ``BEGIN`` and no ``COMMIT``, one round trip
  per statement, **each statement its own snapshot** (two SELECTs may see
  different committed states). A write through it raises
  :class:`~sqlalchemy_dsql.errors.ReadOnlyViolation` (500: a bug, not a
  client error) before anything is sent. Not retried.
  :attr:`Database.snapshot_session` is the same in one
  ``BEGIN READ ONLY`` transaction, for reads that must agree, at two round
  trips more; :meth:`Database.read` retries a read (on a lost connection too).
- :meth:`Database.transactional` decorates an endpoint whose first parameter
  is the session: the whole endpoint runs in
  :func:`~sqlalchemy_dsql.run_transaction` and runs again, with a new
  session, on each conflict. What is retried: the endpoint's statements and
  COMMIT, on SQLSTATE ``40001``, ``OC000``, ``OC001`` (and a connection lost
  before COMMIT). Not retried: any other error; a connection lost during
  COMMIT (unless the policy says ``idempotent=True``); and nothing outside
  the database is undone: an email sent in an attempt that conflicted is
  sent again by the next. The request (path, query, body, other
  dependencies) is parsed once and given unchanged to every attempt.
- :meth:`Database.run` retries a function of the session the same way, from
  any endpoint.
- :func:`add_exception_handlers`: a conflict that was not resolved
  (:class:`~sqlalchemy_dsql.errors.RetriesExhausted`) becomes 409, a
  connection lost during COMMIT 503 ``commit_outcome_unknown``, other
  connection failures 503 ``database_unavailable``; FastAPI answers invalid
  requests with 422, and :func:`get_or_404` a missing row with 404.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

try:
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
except ImportError as error:
    raise ImportError(
        'sqlalchemy_dsql.integrations.fastapi needs FastAPI: pip install "sqlalchemy-dsql[fastapi]"'
    ) from error
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.interfaces import ORMOption

from ._database import Database as _Database
from ._errors import MAPPED, integrity_problem, log_problem, problem_for

__all__ = ["Database", "add_exception_handlers", "get_or_404"]

# Without Depends(scope="function") the session's COMMIT would run after the response is sent.
if "scope" not in inspect.signature(Depends).parameters:
    raise ImportError(
        "sqlalchemy_dsql.integrations.fastapi needs FastAPI 0.121 or newer: "
        'pip install "sqlalchemy-dsql[fastapi]"'
    )

P = ParamSpec("P")
T = TypeVar("T")


class Database(_Database):
    """An engine managed by the application's lifespan, with request sessions on it.

    ``Database(endpoint, **engine_kwargs)`` or ``Database(engine_factory=...)``,
    plus ``policy`` / ``on_retry`` / ``stats`` for the retried units of work.
    """

    @functools.cached_property
    def session(self) -> Any:
        """``Depends``: an ``AsyncSession`` in a transaction, committed before the response is sent.

        Use it as ``Annotated[AsyncSession, db.session]`` or as a default
        (``session: AsyncSession = db.session``), not inside another ``Depends()``.
        """
        # "function" scope: FastAPI runs the code after the yield before sending the
        # response. Its default for yield dependencies, "request", runs it after.
        return Depends(self._request_session, scope="function")

    @functools.cached_property
    def read_session(self) -> Any:
        """``Depends``: an ``AsyncSession`` for reads, each statement its own snapshot.

        One round trip per statement, no ``BEGIN`` / ``COMMIT``; writes are
        refused. Use it as ``Annotated[AsyncSession, db.read_session]``.
        """
        return Depends(self._request_read_session, scope="function")

    @functools.cached_property
    def snapshot_session(self) -> Any:
        """``Depends``: an ``AsyncSession`` in one read-only transaction (two round trips more)."""
        return Depends(self._request_snapshot_session, scope="function")

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """``FastAPI(lifespan=db.lifespan)``: the engine for as long as the application runs."""
        async with self.connected():
            yield

    async def _request_session(self) -> AsyncIterator[AsyncSession]:
        async with self.transaction() as session:
            yield session

    async def _request_read_session(self) -> AsyncIterator[AsyncSession]:
        async with self.reading() as session:
            yield session

    async def _request_snapshot_session(self) -> AsyncIterator[AsyncSession]:
        async with self.reading(snapshot=True) as session:
            yield session

    def transactional(
        self, endpoint: Callable[Concatenate[AsyncSession, P], Awaitable[T]]
    ) -> Callable[P, Awaitable[T]]:
        """Run the endpoint in :meth:`run`: again, with a new session, on each conflict.

        The endpoint's first parameter receives the session and is hidden
        from FastAPI; the others are FastAPI's as usual. Put the decorator
        below the route decorator.
        """
        signature = inspect.signature(endpoint)
        parameters = list(signature.parameters.values())
        if not parameters or parameters[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(
                f"{endpoint.__qualname__}: the first parameter of a transactional endpoint "
                "receives the session and must be positional"
            )

        @functools.wraps(endpoint)
        async def retried(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.run(endpoint, *args, **kwargs)

        # FastAPI reads the parameters from __signature__ and resolves string
        # annotations in the globals of the function __wrapped__ leads to.
        retried.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=parameters[1:]
        )
        return retried


async def get_or_404(session: AsyncSession, entity: type[T], ident: Any, *options: ORMOption) -> T:
    """``session.get(entity, ident, options=options)``, or ``HTTPException(404)`` if absent.

    Pass loader options (``selectinload(Owner.pets)``) for relationships the
    endpoint reads: an ``AsyncSession`` cannot load them lazily.
    """
    found = await session.get(entity, ident, options=options)
    if found is None:
        raise HTTPException(status_code=404, detail=f"{entity.__name__} {ident} not found")
    return found


async def _answer(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, MAPPED)  # registered for these classes only
    status, body = problem_for(error)
    log_problem(request.method, request.url.path, status, body, error)
    return JSONResponse(body, status_code=status)


async def _answer_integrity(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, exc.IntegrityError)  # registered for this class only
    answer = integrity_problem(error)
    if answer is None:  # NOT NULL, CHECK, ...: a bug of the application, not of the request
        raise error
    status, body = answer
    log_problem(request.method, request.url.path, status, body, error)
    return JSONResponse(body, status_code=status)


def add_exception_handlers(app: FastAPI, *, integrity_errors: bool = False) -> None:
    """Answer unresolved conflicts with 409 and database outages with 503, as JSON.

    ``integrity_errors=True`` also answers a unique or foreign-key violation
    with 409, naming the constraint (``{"error": "duplicate", "constraint":
    "owners_email_key", ...}``); other integrity errors stay errors.
    """
    for error_class in MAPPED:
        app.add_exception_handler(error_class, _answer)
    if integrity_errors:
        app.add_exception_handler(exc.IntegrityError, _answer_integrity)
