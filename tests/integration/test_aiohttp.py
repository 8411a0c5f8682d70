"""The aiohttp integration through the emulator: its test client against a small items API."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import test_utils, web
from pydantic import BaseModel, Field
from sqlalchemy import String, exc, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from harness.engine import assert_no_secrets, async_engine, secrets_of
from sqlalchemy_dsql import RetryPolicy
from sqlalchemy_dsql.errors import (
    ClusterUnreachable,
    ConnectionLost,
    RetriesExhausted,
    RetryReason,
)
from sqlalchemy_dsql.integrations.aiohttp import (
    Database,
    database,
    error_middleware,
    get_or_404,
    json_body,
    path_param,
    session_for,
    transactional,
)
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.retry import RetryStats
from sqlalchemy_dsql.schema import create_all, drop_all

pytestmark = pytest.mark.integration

OC000 = "change conflicts with another transaction (OC000)"
POLICY = RetryPolicy(max_attempts=8, base_delay=0.002, max_delay=0.02)

Client = test_utils.TestClient[web.Request, web.Application]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "aiohttp_items"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[int]

    def as_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "quantity": self.quantity}


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=0)


ATTEMPTS: Counter[str] = Counter()
routes = web.RouteTableDef()


@routes.post("/items")
@transactional
async def create_item(request: web.Request, session: AsyncSession) -> web.Response:
    ATTEMPTS["create"] += 1
    body = await json_body(request, ItemIn.model_validate)
    item = Item(name=body.name, quantity=body.quantity)
    session.add(item)
    await session.flush()
    return web.json_response(item.as_json(), status=201)


@routes.get("/items")
async def list_items(request: web.Request) -> web.Response:
    async with session_for(request) as session:
        items = await session.scalars(select(Item).order_by(Item.name))
        return web.json_response([item.as_json() for item in items])


@routes.get("/items/{item_id}")
async def read_item(request: web.Request) -> web.Response:
    item_id = path_param(request, "item_id", uuid.UUID)
    async with session_for(request) as session:
        item = await get_or_404(session, Item, item_id)
    return web.json_response(item.as_json())


@routes.put("/items/{item_id}")
@transactional
async def replace_item(request: web.Request, session: AsyncSession) -> web.Response:
    ATTEMPTS["replace"] += 1
    body = await json_body(request, ItemIn.model_validate)
    item = await get_or_404(session, Item, path_param(request, "item_id", uuid.UUID))
    item.name, item.quantity = body.name, body.quantity
    await session.flush()
    return web.json_response(item.as_json())


@routes.delete("/items/{item_id}")
async def delete_item(request: web.Request) -> web.Response:
    item_id = path_param(request, "item_id", uuid.UUID)
    async with session_for(request) as session:
        await session.delete(await get_or_404(session, Item, item_id))
    return web.Response(status=204)


@routes.post("/items/{item_id}/increment")
@transactional
async def increment(request: web.Request, session: AsyncSession) -> web.Response:
    # Read, then write what was read: a lost update unless conflicts are retried.
    item = await get_or_404(session, Item, path_param(request, "item_id", uuid.UUID))
    item.quantity += 1
    await session.flush()
    return web.json_response(item.as_json())


@routes.post("/unretried-items")
async def create_item_unretried(request: web.Request) -> web.Response:
    ATTEMPTS["create_unretried"] += 1
    body = await json_body(request, ItemIn.model_validate)
    async with session_for(request) as session:
        item = Item(name=body.name, quantity=body.quantity)
        session.add(item)
    return web.json_response(item.as_json(), status=201)


@routes.post("/write-then-fail")
async def write_then_fail(request: web.Request) -> web.Response:
    body = await json_body(request, ItemIn.model_validate)
    async with session_for(request) as session:
        session.add(Item(name=body.name, quantity=body.quantity))
        await session.flush()
        raise web.HTTPBadRequest(text="refused after writing")


@routes.post("/write-then-fail-retried")
@transactional
async def write_then_fail_retried(request: web.Request, session: AsyncSession) -> web.Response:
    ATTEMPTS["write_then_fail_retried"] += 1
    body = await json_body(request, ItemIn.model_validate)
    session.add(Item(name=body.name, quantity=body.quantity))
    await session.flush()
    raise web.HTTPBadRequest(text="refused after writing")


@routes.get("/raise/{kind}")
async def raise_database_error(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    original = exc.DBAPIError("COMMIT", None, OSError("connection reset by peer"))
    if kind == "lost-during-commit":
        raise ConnectionLost("lost during COMMIT", original, during_commit=True)
    if kind == "lost":
        raise ConnectionLost("lost during SELECT", original, during_commit=False)
    if kind == "unreachable":
        raise ClusterUnreachable("cannot reach the cluster")
    raise RetriesExhausted(
        "gave up", reason=RetryReason.CONNECTION_LOST, attempts=3, last_error=original
    )


async def count_items(request: web.Request) -> web.Response:
    """In a sub-application: the Database is found through request.config_dict."""
    count = await database(request).run(
        lambda session: session.scalar(select(func.count()).select_from(Item))
    )
    return web.json_response({"count": count})


def make_app(db: Database) -> web.Application:
    async def create_tables(app: web.Application) -> AsyncIterator[None]:
        await create_all(db.engine, Base.metadata)
        yield

    app = web.Application(middlewares=[error_middleware])
    app.cleanup_ctx.extend([db.cleanup_ctx, create_tables])
    app.add_routes(routes)
    admin = web.Application()
    admin.router.add_get("/count", count_items)
    app.add_subapp("/admin", admin)
    return app


@asynccontextmanager
async def running(db: Database) -> AsyncIterator[Client]:
    async with test_utils.TestClient(test_utils.TestServer(make_app(db))) as client:
        yield client


@pytest.fixture(scope="module")
async def db(dsql: LocalDSQL) -> AsyncIterator[Database]:
    made = Database(engine_factory=lambda: async_engine(dsql), policy=POLICY, stats=RetryStats())
    yield made
    async with made.connected() as engine:
        await drop_all(engine, Base.metadata)


@pytest.fixture(scope="module")
async def started(db: Database) -> AsyncIterator[Client]:
    async with running(db) as client:
        yield client


@pytest.fixture
async def client(db: Database, started: Client) -> Client:
    """The running app's client, with no items and no attempts counted yet."""
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM aiohttp_items"))
    ATTEMPTS.clear()
    return started


async def _stored(db: Database) -> list[tuple[str, int]]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT name, quantity FROM aiohttp_items ORDER BY name"))
        return [(name, quantity) for name, quantity in rows]


async def test_create_read_update_delete(client: Client, db: Database) -> None:
    created = await client.post("/items", json={"name": "leash", "quantity": 3})
    assert created.status == 201, await created.text()
    item = await created.json()
    assert (item["name"], item["quantity"]) == ("leash", 3)
    item_id = item["id"]

    read = await client.get(f"/items/{item_id}")
    assert read.status == 200
    assert await read.json() == item

    await client.post("/items", json={"name": "bowl", "quantity": 1})
    listed = await client.get("/items")
    assert [i["name"] for i in await listed.json()] == ["bowl", "leash"]

    replaced = await client.put(f"/items/{item_id}", json={"name": "long leash", "quantity": 5})
    assert replaced.status == 200
    assert await replaced.json() == {"id": item_id, "name": "long leash", "quantity": 5}
    assert await _stored(db) == [("bowl", 1), ("long leash", 5)]

    counted = await client.get("/admin/count")
    assert await counted.json() == {"count": 2}

    deleted = await client.delete(f"/items/{item_id}")
    assert deleted.status == 204
    assert await _stored(db) == [("bowl", 1)]


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PUT", {"name": "x", "quantity": 1}), ("DELETE", None)]
)
async def test_missing_item_is_404(
    client: Client, db: Database, method: str, body: dict[str, Any] | None
) -> None:
    missing = uuid.uuid4()
    response = await client.request(method, f"/items/{missing}", json=body)
    assert response.status == 404
    assert response.content_type == "application/json"
    assert await response.json() == {"error": "not_found", "detail": f"Item {missing} not found"}
    assert await _stored(db) == []


async def test_invalid_request_is_422_and_writes_nothing(client: Client, db: Database) -> None:
    for path, content in [
        ("/items", b'{"name": "", "quantity": 1}'),
        ("/items", b'{"name": "bowl", "quantity": -1}'),
        ("/items", b'{"name": "bowl"}'),
        ("/unretried-items", b'{"name": "bowl", "quantity": "many"}'),
    ]:
        response = await client.post(path, data=content)
        assert response.status == 422, (path, content)
        body = await response.json()
        assert body["error"] == "validation"
        assert body["detail"][0]["loc"] in (["name"], ["quantity"])
        assert "input" not in body["detail"][0]

    response = await client.post("/items", data=b"{not json")
    assert response.status == 422
    assert await response.json() == {"error": "validation", "detail": "the body is not valid JSON"}

    response = await client.post("/items/not-a-uuid/increment")
    assert response.status == 422
    assert await response.json() == {
        "error": "validation",
        "detail": "badly formed hexadecimal UUID string",
    }
    assert await _stored(db) == []


async def test_conflict_at_commit_is_retried_with_a_new_attempt(
    client: Client, db: Database, dsql: LocalDSQL
) -> None:
    assert db.stats is not None
    retries_before = db.stats.retries
    dsql.fail_next_commits("40001", OC000, times=POLICY.max_attempts - 1)
    response = await client.post("/items", json={"name": "bowl", "quantity": 2})
    assert response.status == 201, await response.text()
    assert ATTEMPTS["create"] == POLICY.max_attempts
    assert db.stats.retries - retries_before == POLICY.max_attempts - 1
    assert await _stored(db) == [("bowl", 2)]


async def test_conflict_exhausting_retries_is_409(
    client: Client, db: Database, dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dsql.fail_next_commits("40001", OC000, times=POLICY.max_attempts)
    response = await client.post("/items", json={"name": "bowl", "quantity": 2})
    assert response.status == 409
    body = await response.json()
    assert body == {
        "error": "conflict",
        "detail": (
            "the transaction conflicted with concurrent transactions and was rolled back; "
            f"gave up after {POLICY.max_attempts} attempts (SQLSTATE OC000). The request can "
            "be sent again."
        ),
        "attempts": POLICY.max_attempts,
        "sqlstate": "OC000",
    }
    assert ATTEMPTS["create"] == POLICY.max_attempts
    assert await _stored(db) == []
    assert "POST /items -> 409 conflict" in caplog.text
    assert_no_secrets([await response.text(), caplog.text], secrets_of(dsql))


async def test_update_that_keeps_conflicting_leaves_the_row_unchanged(
    client: Client, db: Database, dsql: LocalDSQL
) -> None:
    created = await client.post("/items", json={"name": "bowl", "quantity": 1})
    item_id = (await created.json())["id"]
    dsql.fail_next_commits("40001", OC000, times=POLICY.max_attempts)
    response = await client.put(f"/items/{item_id}", json={"name": "plate", "quantity": 9})
    assert response.status == 409
    assert (await response.json())["attempts"] == POLICY.max_attempts
    assert ATTEMPTS["replace"] == POLICY.max_attempts
    assert await _stored(db) == [("bowl", 1)]


async def test_session_for_commits_before_the_response(
    client: Client, db: Database, dsql: LocalDSQL
) -> None:
    """A COMMIT that fails at the end of the block is the response: 409, not 201."""
    dsql.fail_next_commits("40001", OC000)
    response = await client.post("/unretried-items", json={"name": "bowl", "quantity": 2})
    assert response.status == 409
    body = await response.json()
    assert (body["attempts"], body["sqlstate"]) == (1, "OC000")
    assert ATTEMPTS["create_unretried"] == 1
    assert await _stored(db) == []

    response = await client.post("/unretried-items", json={"name": "bowl", "quantity": 2})
    assert response.status == 201
    assert await _stored(db) == [("bowl", 2)]


@pytest.mark.parametrize("path", ["/write-then-fail", "/write-then-fail-retried"])
async def test_error_after_writing_rolls_back(client: Client, db: Database, path: str) -> None:
    response = await client.post(path, json={"name": "bowl", "quantity": 2})
    assert response.status == 400
    assert await response.text() == "refused after writing"
    assert await _stored(db) == []
    # An HTTP error is not a conflict: the unit of work ran once.
    assert ATTEMPTS["write_then_fail_retried"] == (path == "/write-then-fail-retried")


async def test_concurrent_increments_are_all_kept(client: Client, db: Database) -> None:
    created = await client.post("/items", json={"name": "bowl", "quantity": 0})
    item_id = (await created.json())["id"]
    assert db.stats is not None
    retries_before = db.stats.retries
    responses = await asyncio.gather(
        *(client.post(f"/items/{item_id}/increment") for _ in range(5))
    )
    assert [r.status for r in responses] == [200] * 5
    assert await _stored(db) == [("bowl", 5)]
    print(f"5 concurrent increments: {db.stats.retries - retries_before} retries")


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("lost-during-commit", "commit_outcome_unknown"),
        ("lost", "database_unavailable"),
        ("unreachable", "database_unavailable"),
        ("lost-on-every-attempt", "database_unavailable"),
    ],
)
async def test_database_failures_are_503(
    client: Client, dsql: LocalDSQL, kind: str, error: str
) -> None:
    response = await client.get(f"/raise/{kind}")
    assert response.status == 503
    text_ = await response.text()
    assert (await response.json())["error"] == error
    assert "connection reset" not in text_
    assert_no_secrets([text_], secrets_of(dsql))


async def test_cleanup_ctx_makes_and_disposes_the_engine(dsql: LocalDSQL) -> None:
    db = Database(engine_factory=lambda: async_engine(dsql), policy=POLICY)
    with pytest.raises(RuntimeError, match="has not started"):
        db.engine  # noqa: B018
    before = set(dsql.session_ids())
    async with running(db) as client:
        assert (await client.get("/items")).status == 200
        opened = set(dsql.session_ids()) - before
        assert opened
    with pytest.raises(RuntimeError, match="has not started, or has stopped"):
        db.sessions  # noqa: B018
    for _ in range(100):
        if not opened & set(dsql.session_ids()):
            break
        await asyncio.sleep(0.02)
    assert not opened & set(dsql.session_ids()), "the engine's connections were not closed"


def test_import_without_aiohttp_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.delitem(sys.modules, "sqlalchemy_dsql.integrations.aiohttp")
    with pytest.raises(ImportError, match=r'pip install "sqlalchemy-dsql\[aiohttp\]"'):
        importlib.import_module("sqlalchemy_dsql.integrations.aiohttp")
