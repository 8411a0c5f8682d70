"""The FastAPI integration through the emulator: httpx against the ASGI app, its lifespan run.

No ``from __future__ import annotations`` here: the test app is built inside a
function, and FastAPI resolves string annotations in the module's globals only.
"""

import asyncio
import importlib
import logging
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import String, exc, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from harness.engine import assert_no_secrets, async_engine, secrets_of
from sqlalchemy_dsql import RetryPolicy, pool_counters
from sqlalchemy_dsql.errors import (
    ClusterUnreachable,
    ConfigurationError,
    ConnectionLost,
    RetriesExhausted,
    RetryReason,
)
from sqlalchemy_dsql.integrations.fastapi import Database, add_exception_handlers, get_or_404
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.retry import RetryStats
from sqlalchemy_dsql.schema import create_all, drop_all

pytestmark = pytest.mark.integration

OC000 = "change conflicts with another transaction (OC000)"
POLICY = RetryPolicy(max_attempts=8, base_delay=0.002, max_delay=0.02)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "fastapi_items"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[int]


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=0)


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    quantity: int


class App:
    """A small items API on a Database, and what its endpoints did."""

    def __init__(self, db: Database) -> None:
        assert db.stats is not None
        self.db = db
        self.stats = db.stats
        self.attempts: Counter[str] = Counter()
        self.app = self._build()

    def _build(self) -> FastAPI:
        db = self.db
        attempts = self.attempts

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
            async with db.lifespan(app):
                await create_all(db.engine, Base.metadata)
                yield {"started_by": "the user's lifespan"}

        app = FastAPI(lifespan=lifespan)
        add_exception_handlers(app)
        DBSession = Annotated[AsyncSession, db.session]

        @app.post("/items", status_code=201)
        @db.transactional
        async def create_item(session: AsyncSession, body: ItemIn) -> ItemOut:
            attempts["create"] += 1
            item = Item(name=body.name, quantity=body.quantity)
            session.add(item)
            await session.flush()
            return ItemOut.model_validate(item)

        @app.get("/items")
        async def list_items(session: DBSession) -> list[ItemOut]:
            items = await session.scalars(select(Item).order_by(Item.name))
            return [ItemOut.model_validate(item) for item in items]

        @app.get("/items/{item_id}")
        async def read_item(item_id: uuid.UUID, session: DBSession) -> ItemOut:
            return ItemOut.model_validate(await get_or_404(session, Item, item_id))

        @app.put("/items/{item_id}")
        @db.transactional
        async def replace_item(session: AsyncSession, item_id: uuid.UUID, body: ItemIn) -> ItemOut:
            attempts["replace"] += 1
            item = await get_or_404(session, Item, item_id)
            item.name, item.quantity = body.name, body.quantity
            await session.flush()
            return ItemOut.model_validate(item)

        @app.delete("/items/{item_id}", status_code=204)
        async def delete_item(item_id: uuid.UUID, session: AsyncSession = db.session) -> Response:
            await session.delete(await get_or_404(session, Item, item_id))
            return Response(status_code=204)

        @app.post("/items/{item_id}/increment")
        @db.transactional
        async def increment(session: AsyncSession, item_id: uuid.UUID) -> ItemOut:
            # Read, then write what was read: a lost update unless conflicts are retried.
            item = await get_or_404(session, Item, item_id)
            item.quantity += 1
            await session.flush()
            return ItemOut.model_validate(item)

        @app.post("/unretried-items", status_code=201)
        async def create_item_unretried(body: ItemIn, session: DBSession) -> ItemOut:
            attempts["create_unretried"] += 1
            item = Item(name=body.name, quantity=body.quantity)
            session.add(item)
            await session.flush()
            return ItemOut.model_validate(item)

        @app.post("/write-then-fail")
        async def write_then_fail(body: ItemIn, session: DBSession) -> None:
            session.add(Item(name=body.name, quantity=body.quantity))
            await session.flush()
            raise HTTPException(status_code=400, detail="refused after writing")

        @app.post("/write-then-fail-retried")
        @db.transactional
        async def write_then_fail_retried(session: AsyncSession, body: ItemIn) -> None:
            attempts["write_then_fail_retried"] += 1
            session.add(Item(name=body.name, quantity=body.quantity))
            await session.flush()
            raise HTTPException(status_code=400, detail="refused after writing")

        @app.get("/raise/{kind}")
        async def raise_database_error(kind: str) -> None:
            original = exc.DBAPIError("COMMIT", None, OSError("connection reset by peer"))
            if kind == "lost-during-commit":
                raise ConnectionLost("lost during COMMIT", original, during_commit=True)
            if kind == "lost":
                raise ConnectionLost("lost during SELECT", original, during_commit=False)
            if kind == "unreachable":
                raise ClusterUnreachable("cannot reach the cluster")
            raise RetriesExhausted(
                "gave up", reason=RetryReason.CONNECTION_LOST, attempts=3, last_error=original
            ) from original

        return app


@asynccontextmanager
async def running(api: App) -> AsyncIterator[httpx.AsyncClient]:
    """The app started as a server starts it, and a client talking to it in process."""
    async with (
        api.app.router.lifespan_context(api.app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app), base_url="http://test"
        ) as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def api(dsql: LocalDSQL) -> AsyncIterator[App]:
    db = Database(engine_factory=lambda: async_engine(dsql), policy=POLICY, stats=RetryStats())
    yield App(db)
    async with db.connected() as engine:
        await drop_all(engine, Base.metadata)


@pytest.fixture(scope="module")
async def started(api: App) -> AsyncIterator[httpx.AsyncClient]:
    async with running(api) as client:
        yield client


@pytest.fixture
async def client(api: App, started: httpx.AsyncClient) -> httpx.AsyncClient:
    """The running app's client, with no items and no attempts counted yet."""
    async with api.db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM fastapi_items"))
    api.attempts.clear()
    return started


async def _stored(api: App) -> list[tuple[str, int]]:
    async with api.db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT name, quantity FROM fastapi_items ORDER BY name"))
        return [(name, quantity) for name, quantity in rows]


async def test_create_read_update_delete(client: httpx.AsyncClient, api: App) -> None:
    created = await client.post("/items", json={"name": "leash", "quantity": 3})
    assert created.status_code == 201, created.text
    item = created.json()
    assert item["name"] == "leash"
    assert item["quantity"] == 3
    item_id = uuid.UUID(item["id"])

    read = await client.get(f"/items/{item_id}")
    assert read.status_code == 200
    assert read.json() == item

    await client.post("/items", json={"name": "bowl", "quantity": 1})
    listed = await client.get("/items")
    assert [i["name"] for i in listed.json()] == ["bowl", "leash"]

    replaced = await client.put(f"/items/{item_id}", json={"name": "long leash", "quantity": 5})
    assert replaced.status_code == 200
    assert replaced.json() == {"id": str(item_id), "name": "long leash", "quantity": 5}
    assert await _stored(api) == [("bowl", 1), ("long leash", 5)]

    deleted = await client.delete(f"/items/{item_id}")
    assert deleted.status_code == 204
    assert await _stored(api) == [("bowl", 1)]


@pytest.mark.parametrize(
    ("method", "body"), [("get", None), ("put", {"name": "x", "quantity": 1}), ("delete", None)]
)
async def test_missing_item_is_404(
    client: httpx.AsyncClient, api: App, method: str, body: dict[str, Any] | None
) -> None:
    missing = uuid.uuid4()
    response = await client.request(method, f"/items/{missing}", json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": f"Item {missing} not found"}
    assert await _stored(api) == []


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/items", b'{"name": "", "quantity": 1}'),
        ("/items", b'{"name": "bowl", "quantity": -1}'),
        ("/items", b'{"name": "bowl"}'),
        ("/items", b"{not json"),
        ("/unretried-items", b'{"name": "bowl", "quantity": "many"}'),
        ("/items/not-a-uuid/increment", b""),
    ],
)
async def test_invalid_request_is_422_and_writes_nothing(
    client: httpx.AsyncClient, api: App, path: str, content: bytes
) -> None:
    response = await client.post(
        path, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert api.attempts == Counter()
    assert await _stored(api) == []


async def test_conflict_at_commit_is_retried_with_a_new_attempt(
    client: httpx.AsyncClient, api: App, dsql: LocalDSQL
) -> None:
    retries_before = api.stats.retries
    dsql.fail_next_commits("40001", OC000, times=POLICY.max_attempts - 1)
    response = await client.post("/items", json={"name": "bowl", "quantity": 2})
    assert response.status_code == 201, response.text
    assert api.attempts["create"] == POLICY.max_attempts
    assert api.stats.retries - retries_before == POLICY.max_attempts - 1
    assert await _stored(api) == [("bowl", 2)]


async def test_conflict_exhausting_retries_is_409(
    client: httpx.AsyncClient, api: App, dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dsql.fail_next_commits("40001", OC000, times=POLICY.max_attempts)
    response = await client.post("/items", json={"name": "bowl", "quantity": 2})
    assert response.status_code == 409, response.text
    body = response.json()
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
    assert api.attempts["create"] == POLICY.max_attempts
    assert await _stored(api) == []
    assert "POST /items -> 409 conflict" in caplog.text
    assert_no_secrets([response.text, caplog.text], secrets_of(dsql))


async def test_update_that_keeps_conflicting_leaves_the_row_unchanged(
    client: httpx.AsyncClient, api: App, dsql: LocalDSQL
) -> None:
    item_id = (await client.post("/items", json={"name": "bowl", "quantity": 1})).json()["id"]
    dsql.fail_next_commits("40001", OC000, times=POLICY.max_attempts)
    response = await client.put(f"/items/{item_id}", json={"name": "plate", "quantity": 9})
    assert response.status_code == 409
    assert response.json()["attempts"] == POLICY.max_attempts
    assert await _stored(api) == [("bowl", 1)]


async def test_session_dependency_commits_before_the_response(
    client: httpx.AsyncClient, api: App, dsql: LocalDSQL
) -> None:
    """A COMMIT that fails in the dependency's exit is the response: 409, not 201."""
    dsql.fail_next_commits("40001", OC000)
    response = await client.post("/unretried-items", json={"name": "bowl", "quantity": 2})
    assert response.status_code == 409, response.text
    assert response.json()["attempts"] == 1
    assert response.json()["sqlstate"] == "OC000"
    assert api.attempts["create_unretried"] == 1
    assert await _stored(api) == []

    response = await client.post("/unretried-items", json={"name": "bowl", "quantity": 2})
    assert response.status_code == 201
    assert await _stored(api) == [("bowl", 2)]


@pytest.mark.parametrize("path", ["/write-then-fail", "/write-then-fail-retried"])
async def test_error_after_writing_rolls_back(
    client: httpx.AsyncClient, api: App, path: str
) -> None:
    response = await client.post(path, json={"name": "bowl", "quantity": 2})
    assert response.status_code == 400
    assert response.json() == {"detail": "refused after writing"}
    assert await _stored(api) == []
    # An HTTPException is not a conflict: the unit of work ran once.
    assert api.attempts["write_then_fail_retried"] == (path == "/write-then-fail-retried")


async def test_concurrent_increments_are_all_kept(client: httpx.AsyncClient, api: App) -> None:
    item_id = (await client.post("/items", json={"name": "bowl", "quantity": 0})).json()["id"]
    retries_before = api.stats.retries
    responses = await asyncio.gather(
        *(client.post(f"/items/{item_id}/increment") for _ in range(5))
    )
    assert [r.status_code for r in responses] == [200] * 5
    assert await _stored(api) == [("bowl", 5)]
    print(f"5 concurrent increments: {api.stats.retries - retries_before} retries")


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
    client: httpx.AsyncClient, dsql: LocalDSQL, kind: str, error: str
) -> None:
    response = await client.get(f"/raise/{kind}")
    assert response.status_code == 503
    assert response.json()["error"] == error
    assert "connection reset" not in response.text
    assert_no_secrets([response.text], secrets_of(dsql))


async def test_lifespan_makes_and_disposes_the_engine(dsql: LocalDSQL) -> None:
    db = Database(engine_factory=lambda: async_engine(dsql), policy=POLICY, stats=RetryStats())
    api = App(db)
    with pytest.raises(RuntimeError, match="has not started"):
        db.engine  # noqa: B018
    before = set(dsql.session_ids())
    async with running(api) as client:
        assert (await client.get("/items")).status_code == 200
        opened = set(dsql.session_ids()) - before
        assert opened
    with pytest.raises(RuntimeError, match="has not started, or has stopped"):
        db.sessions  # noqa: B018
    for _ in range(100):
        if not opened & set(dsql.session_ids()):
            break
        await asyncio.sleep(0.02)
    assert not opened & set(dsql.session_ids()), "the engine's connections were not closed"


async def test_database_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="the cluster endpoint, or engine_factory"):
        Database()
    with pytest.raises(ConfigurationError, match="no URL, endpoint or engine arguments"):
        Database("abc.dsql.us-east-1.on.aws", engine_factory=lambda: None)
    db = Database("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", pool_size=2)

    with pytest.raises(TypeError, match="first parameter"):

        @db.transactional  # type: ignore[arg-type]
        async def no_session() -> None: ...


async def test_database_from_a_url_alone(dsql: LocalDSQL) -> None:
    # A settings DSN, as a FastAPI app reads it: the URL and nothing else.
    db = Database(dsql.url(), pool_size=2)
    async with db.connected() as engine:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT current_user"))).scalar() == "admin"
        assert pool_counters(engine).tokens_minted == 1


def test_import_without_fastapi_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "sqlalchemy_dsql.integrations.fastapi")
    with pytest.raises(ImportError, match=r'pip install "sqlalchemy-dsql\[fastapi\]"'):
        importlib.import_module("sqlalchemy_dsql.integrations.fastapi")


def test_import_with_a_fastapi_older_than_0_121_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before 0.121 there is no Depends(scope=...): the COMMIT would follow the response."""
    import fastapi

    def old_depends(dependency: Any = None, *, use_cache: bool = True) -> Any: ...

    monkeypatch.setattr(fastapi, "Depends", old_depends)
    monkeypatch.delitem(sys.modules, "sqlalchemy_dsql.integrations.fastapi")
    with pytest.raises(ImportError, match=r"needs FastAPI 0\.121 or newer"):
        importlib.import_module("sqlalchemy_dsql.integrations.fastapi")


async def test_importing_the_package_imports_no_web_framework() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys, sqlalchemy_dsql, sqlalchemy_dsql.integrations; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'aiohttp')))",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert out.decode().strip() == "[]"
