"""The opt-in 409 for unique and foreign-key violations, on FastAPI and aiohttp.

The body names the constraint (from the server's error fields) and never
quotes the row; other integrity errors (NOT NULL here) stay errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

SCHEMA = (
    "DROP TABLE IF EXISTS integrity_pets",
    "DROP TABLE IF EXISTS integrity_owners",
    "CREATE TABLE integrity_owners (id int PRIMARY KEY, name text NOT NULL)",
    "CREATE TABLE integrity_pets (id int PRIMARY KEY, "
    "owner_id int NOT NULL REFERENCES integrity_owners (id))",
)
SECRET_NAME = "Mary Major, who must not be quoted"


@pytest.fixture(scope="module")
async def tables(dsql: LocalDSQL) -> AsyncIterator[None]:
    engine = create_async_engine(dsql.url())
    try:
        for statement in SCHEMA:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        yield
        for statement in SCHEMA[:2]:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _insert(engine: AsyncEngine, table: str, **row: Any) -> None:
    columns = ", ".join(row)
    values = ", ".join(f":{name}" for name in row)
    async with engine.begin() as conn:
        await conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({values})"), row)


def _check(status: int, body: dict[str, Any], error: str, constraint: str, sqlstate: str) -> None:
    assert status == 409, body
    assert body["error"] == error
    assert body["constraint"] == constraint
    assert body["sqlstate"] == sqlstate
    assert SECRET_NAME not in str(body)


async def test_fastapi_answers_violations_with_409_naming_the_constraint(
    dsql: LocalDSQL, tables: None
) -> None:
    from fastapi import FastAPI

    from sqlalchemy_dsql.integrations.fastapi import add_exception_handlers

    engine = create_async_engine(dsql.url())
    app = FastAPI()
    add_exception_handlers(app, integrity_errors=True)

    @app.post("/owners/{owner_id}")
    async def owner(owner_id: int) -> str:
        await _insert(engine, "integrity_owners", id=owner_id, name=SECRET_NAME)
        return "ok"

    @app.post("/nameless/{owner_id}")
    async def nameless(owner_id: int) -> str:
        await _insert(engine, "integrity_owners", id=owner_id, name=None)
        return "ok"

    @app.post("/pets/{pet_id}")
    async def pet(pet_id: int, owner_id: int) -> str:
        await _insert(engine, "integrity_pets", id=pet_id, owner_id=owner_id)
        return "ok"

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            assert (await client.post("/owners/1")).status_code == 200
            duplicate = await client.post("/owners/1")
            _check(
                duplicate.status_code,
                duplicate.json(),
                "duplicate",
                "integrity_owners_pkey",
                "23505",
            )
            orphan = await client.post("/pets/1", params={"owner_id": 99})
            _check(
                orphan.status_code,
                orphan.json(),
                "foreign_key_violation",
                "integrity_pets_owner_id_fkey",
                "23503",
            )
            # NOT NULL is the application's bug, not the request's: it stays a 500.
            assert (await client.post("/nameless/2")).status_code == 500
    finally:
        await engine.dispose()


async def test_aiohttp_middleware_answers_violations_with_409(
    dsql: LocalDSQL, tables: None
) -> None:
    from aiohttp import test_utils, web

    from sqlalchemy_dsql.integrations.aiohttp import integrity_error_middleware

    engine = create_async_engine(dsql.url())

    async def owner(request: web.Request) -> web.Response:
        await _insert(
            engine, "integrity_owners", id=int(request.match_info["id"]), name=SECRET_NAME
        )
        return web.json_response("ok")

    async def nameless(request: web.Request) -> web.Response:
        await _insert(engine, "integrity_owners", id=int(request.match_info["id"]), name=None)
        return web.json_response("ok")

    app = web.Application(middlewares=[integrity_error_middleware])
    app.router.add_post("/owners/{id}", owner)
    app.router.add_post("/nameless/{id}", nameless)
    try:
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:
            assert (await client.post("/owners/11")).status == 200
            duplicate = await client.post("/owners/11")
            _check(
                duplicate.status,
                await duplicate.json(),
                "duplicate",
                "integrity_owners_pkey",
                "23505",
            )
            assert (await client.post("/nameless/12")).status == 500
    finally:
        await engine.dispose()
