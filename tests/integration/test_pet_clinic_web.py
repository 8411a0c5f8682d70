"""The pet clinic's aiohttp app through the emulator, with aiohttp's test client.

The tables are the demo's (``owner``, ``pet``, ...), which ``test_pet_clinic.py``
drops and creates again in the same emulator: each test creates whatever is
missing and empties them first.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import test_utils, web
from async_pet_clinic.models import Base
from async_pet_clinic.web import create_app

from harness.clinic import (
    CONFLICT,
    OC000,
    POLICY,
    TOMORROW,
    WRITE_IDS,
    WRITES,
    effect,
    empty_tables,
    snapshot,
)
from harness.engine import async_engine
from sqlalchemy_dsql.integrations.aiohttp import Database
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.retry import RetryStats
from sqlalchemy_dsql.schema import create_all

pytestmark = pytest.mark.integration


Client = test_utils.TestClient[web.Request, web.Application]


@pytest.fixture(scope="module")
def db(dsql: LocalDSQL) -> Database:
    return Database(engine_factory=lambda: async_engine(dsql), policy=POLICY, stats=RetryStats())


@pytest.fixture(scope="module")
async def started(db: Database) -> AsyncIterator[Client]:
    async with test_utils.TestClient(test_utils.TestServer(create_app(db))) as client:
        yield client


@pytest.fixture
async def client(db: Database, started: Client) -> Client:
    """The running app's client, on empty tables."""
    await create_all(db.engine, Base.metadata)
    await empty_tables(db.engine)
    return started


async def _created(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def _ok(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _seed(client: Client) -> dict[str, str]:
    """An owner with a pet, two specialties and a vet; their keys, for paths."""
    owner = await _created(
        client,
        "/owners",
        {
            "name": "Mary Major",
            "city": "Anytown",
            "pets": [{"name": "Rex", "birth_date": "2021-07-23"}],
        },
    )
    await _created(client, "/specialties", {"name": "Cats"})
    await _created(client, "/specialties", {"name": "Dogs"})
    vet = await _created(client, "/vets", {"name": "Akua Mansa", "specialties": ["Dogs"]})
    return {"owner": owner["id"], "pet": owner["pets"][0]["id"], "vet": vet["id"]}


async def test_owners_crud(client: Client, db: Database) -> None:
    owner = await _created(
        client,
        "/owners",
        {
            "name": " John Doe ",
            "city": "Anytown",
            "pets": [
                {"name": "Tom", "birth_date": "2006-10-25"},
                {"name": "Fido", "birth_date": "2019-01-02"},
            ],
        },
    )
    owner_id = owner["id"]
    assert (owner["name"], owner["telephone"]) == ("John Doe", None)
    assert [(p["name"], p["owner_id"]) for p in owner["pets"]] == [
        ("Fido", owner_id),
        ("Tom", owner_id),
    ]
    assert await _ok(await client.get(f"/owners/{owner_id}")) == owner

    await _created(client, "/owners", {"name": "Anne", "city": "Othertown"})
    listed = await _ok(await client.get("/owners"))
    assert [o["name"] for o in listed] == ["Anne", "John Doe"]

    patched = await client.patch(
        f"/owners/{owner_id}", json={"city": "Newtown", "telephone": "555-555-0199"}
    )
    assert await _ok(patched) == {**owner, "city": "Newtown", "telephone": "555-555-0199"}
    cleared = await client.patch(f"/owners/{owner_id}", json={"telephone": None})
    assert (await _ok(cleared))["telephone"] is None

    deleted = await client.delete(f"/owners/{owner_id}")
    assert deleted.status == 204
    assert (await client.get(f"/owners/{owner_id}")).status == 404
    stored = await snapshot(db.engine)
    assert [row[1] for row in stored["owner"]] == ["Anne"]
    assert stored["pet"] == []


async def test_pets_crud(client: Client) -> None:
    owner = await _created(client, "/owners", {"name": "Mary Major", "city": "Anytown"})
    pet = await _created(
        client, f"/owners/{owner['id']}/pets", {"name": "Rex", "birth_date": "2021-07-23"}
    )
    assert (pet["name"], pet["birth_date"], pet["owner_id"]) == ("Rex", "2021-07-23", owner["id"])
    today = datetime.date.today().isoformat()
    newborn = await _created(
        client, f"/owners/{owner['id']}/pets", {"name": "Bella", "birth_date": today}
    )
    assert await _ok(await client.get(f"/pets/{pet['id']}")) == pet
    read_owner = await _ok(await client.get(f"/owners/{owner['id']}"))
    assert [p["name"] for p in read_owner["pets"]] == ["Bella", "Rex"]

    patched = await client.patch(f"/pets/{pet['id']}", json={"name": "Rex II"})
    assert await _ok(patched) == {**pet, "name": "Rex II"}
    patched = await client.patch(f"/pets/{pet['id']}", json={"birth_date": "2020-02-29"})
    assert await _ok(patched) == {**pet, "name": "Rex II", "birth_date": "2020-02-29"}

    assert (await client.delete(f"/pets/{pet['id']}")).status == 204
    assert (await client.get(f"/pets/{pet['id']}")).status == 404
    assert (await _ok(await client.get(f"/owners/{owner['id']}")))["pets"] == [newborn]


async def test_specialties_and_vets_crud(client: Client, db: Database) -> None:
    for name in ["Dogs", "Cats", "Birds"]:
        assert await _created(client, "/specialties", {"name": name}) == {"name": name}
    duplicate = await client.post("/specialties", json={"name": "Cats"})
    assert duplicate.status == 409
    assert await duplicate.json() == {
        "error": "exists",
        "detail": "Specialty 'Cats' already exists",
    }
    listed = await _ok(await client.get("/specialties"))
    assert listed == [{"name": "Birds"}, {"name": "Cats"}, {"name": "Dogs"}]

    vet = await _created(
        client, "/vets", {"name": "Carlos Salazar", "specialties": ["Dogs", "Cats"]}
    )
    assert vet["specialties"] == ["Cats", "Dogs"]
    await _created(client, "/vets", {"name": "Akua Mansa"})
    assert await _ok(await client.get(f"/vets/{vet['id']}")) == vet
    vets = await _ok(await client.get("/vets"))
    assert [(v["name"], v["specialties"]) for v in vets] == [
        ("Akua Mansa", []),
        ("Carlos Salazar", ["Cats", "Dogs"]),
    ]

    patched = await client.patch(f"/vets/{vet['id']}", json={"specialties": ["Birds", "Cats"]})
    assert await _ok(patched) == {**vet, "specialties": ["Birds", "Cats"]}
    renamed = await client.patch(f"/vets/{vet['id']}", json={"name": "C. Salazar"})
    assert await _ok(renamed) == {**vet, "name": "C. Salazar", "specialties": ["Birds", "Cats"]}

    assert (await client.delete(f"/vets/{vet['id']}")).status == 204
    assert (await client.get(f"/vets/{vet['id']}")).status == 404
    stored = await snapshot(db.engine)
    assert stored["vet_specialty"] == []
    assert len(stored["specialty"]) == 3


async def test_unknown_specialty_is_422_and_writes_nothing(client: Client, db: Database) -> None:
    keys = await _seed(client)
    before = await snapshot(db.engine)
    for method, path, body in [
        ("POST", "/vets", {"name": "Nikhil Jayashankar", "specialties": ["Cats", "Birds", "Fish"]}),
        ("PATCH", f"/vets/{keys['vet']}", {"name": "A. Mansa", "specialties": ["Birds", "Fish"]}),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status == 422, await response.text()
        assert await response.json() == {
            "error": "validation",
            "detail": [
                {
                    "type": "unknown_specialty",
                    "loc": ["specialties"],
                    "msg": "no such specialty: Birds, Fish (POST /specialties first)",
                }
            ],
        }
    assert await snapshot(db.engine) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/owners/{key}", None),
        ("PATCH", "/owners/{key}", {"city": "Newtown"}),
        ("DELETE", "/owners/{key}", None),
        ("POST", "/owners/{key}/pets", {"name": "Rex", "birth_date": "2021-07-23"}),
        ("GET", "/pets/{key}", None),
        ("PATCH", "/pets/{key}", {"name": "Max"}),
        ("DELETE", "/pets/{key}", None),
        ("GET", "/vets/{key}", None),
        ("PATCH", "/vets/{key}", {"specialties": ["Cats"]}),
        ("DELETE", "/vets/{key}", None),
    ],
)
async def test_missing_row_is_404(
    client: Client, db: Database, method: str, path: str, body: dict[str, Any] | None
) -> None:
    await _seed(client)
    before = await snapshot(db.engine)
    missing = uuid.uuid4()
    response = await client.request(method, path.format(key=missing), json=body)
    assert response.status == 404, await response.text()
    kind = {"owners": "Owner", "pets": "Pet", "vets": "Vet"}[path.split("/")[1]]
    assert await response.json() == {"error": "not_found", "detail": f"{kind} {missing} not found"}
    assert await snapshot(db.engine) == before


def _validation_cases() -> list[Any]:
    owner = {"name": "John Doe", "city": "Anytown"}
    pet = {"name": "Rex", "birth_date": "2021-07-23"}
    cases = [
        ("POST", "/owners", {**owner, "name": "x" * 31}, ["name"]),
        ("POST", "/owners", {**owner, "name": "   "}, ["name"]),
        ("POST", "/owners", {**owner, "city": "x" * 81}, ["city"]),
        ("POST", "/owners", {**owner, "telephone": "5" * 21}, ["telephone"]),
        ("POST", "/owners", {"name": "John Doe"}, ["city"]),
        ("POST", "/owners", {**owner, "email": "john@example.com"}, ["email"]),
        ("POST", "/owners", {**owner, "pets": [{**pet, "birth_date": TOMORROW}]}, ["pets"]),
        ("POST", "/owners", [owner], []),
        ("PATCH", "/owners/{owner}", {"name": None}, ["name"]),
        ("POST", "/owners/{owner}/pets", {**pet, "name": "x" * 31}, ["name"]),
        ("POST", "/owners/{owner}/pets", {**pet, "birth_date": TOMORROW}, ["birth_date"]),
        ("POST", "/owners/{owner}/pets", {"name": "Rex"}, ["birth_date"]),
        ("PATCH", "/pets/{pet}", {"birth_date": None}, ["birth_date"]),
        ("POST", "/specialties", {"name": "x" * 81}, ["name"]),
        ("POST", "/vets", {"name": "x" * 31}, ["name"]),
        ("PATCH", "/vets/{vet}", {"specialties": None}, ["specialties"]),
    ]
    return [pytest.param(*case, id=f"{case[0]} {case[1]} {case[3]}") for case in cases]


@pytest.mark.parametrize(("method", "path", "body", "loc"), _validation_cases())
async def test_invalid_body_is_422_and_writes_nothing(
    client: Client, db: Database, method: str, path: str, body: Any, loc: list[str]
) -> None:
    keys = await _seed(client)
    before = await snapshot(db.engine)
    response = await client.request(method, path.format(**keys), json=body)
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert problem["error"] == "validation"
    assert problem["detail"][0]["loc"][: len(loc)] == loc
    assert "input" not in problem["detail"][0]
    assert await snapshot(db.engine) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/owners"),
        ("PATCH", "/owners/{owner}"),
        ("POST", "/owners/{owner}/pets"),
        ("PATCH", "/pets/{pet}"),
        ("POST", "/specialties"),
        ("POST", "/vets"),
        ("PATCH", "/vets/{vet}"),
    ],
)
async def test_body_not_json_is_422(client: Client, db: Database, method: str, path: str) -> None:
    keys = await _seed(client)
    before = await snapshot(db.engine)
    response = await client.request(method, path.format(**keys), data=b"{not json")
    assert response.status == 422
    assert await response.json() == {"error": "validation", "detail": "the body is not valid JSON"}
    assert await snapshot(db.engine) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/owners/not-a-uuid"),
        ("PATCH", "/owners/not-a-uuid"),
        ("DELETE", "/owners/not-a-uuid"),
        ("POST", "/owners/not-a-uuid/pets"),
        ("GET", "/pets/not-a-uuid"),
        ("PATCH", "/pets/not-a-uuid"),
        ("DELETE", "/pets/not-a-uuid"),
        ("GET", "/vets/not-a-uuid"),
        ("PATCH", "/vets/not-a-uuid"),
        ("DELETE", "/vets/not-a-uuid"),
    ],
)
async def test_key_not_a_uuid_is_422(client: Client, method: str, path: str) -> None:
    response = await client.request(method, path, json={})
    assert response.status == 422
    assert await response.json() == {
        "error": "validation",
        "detail": "badly formed hexadecimal UUID string",
    }


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=WRITE_IDS)
async def test_conflict_exhausting_retries_is_409_and_changes_nothing(
    client: Client,
    db: Database,
    dsql: LocalDSQL,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    keys = await _seed(client)
    before = await snapshot(db.engine)
    dsql.fail_next_commits("40001", OC000, times=POLICY.max_attempts)
    response = await client.request(method, path.format(**keys), json=body)
    assert response.status == 409, await response.text()
    assert response.content_type == "application/json"
    assert await response.json() == CONFLICT
    assert await snapshot(db.engine) == before


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=WRITE_IDS)
async def test_conflict_is_retried_and_the_write_done_once(
    client: Client,
    db: Database,
    dsql: LocalDSQL,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    without_conflicts, retries = await _effect(client, db, dsql, method, path, body)
    assert retries == 0
    await empty_tables(db.engine)
    conflicts = POLICY.max_attempts - 1
    with_conflicts, retries = await _effect(
        client, db, dsql, method, path, body, conflicts=conflicts
    )
    assert retries == conflicts
    assert with_conflicts == without_conflicts


async def _effect(
    client: Client,
    db: Database,
    dsql: LocalDSQL,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    conflicts: int = 0,
) -> tuple[dict[str, int], int]:
    """The request on freshly seeded tables, its first ``conflicts`` COMMITs failing.

    Returns its :func:`harness.clinic.effect` and the retries it took.
    """
    assert db.stats is not None
    keys = await _seed(client)
    before = await snapshot(db.engine)
    retries = db.stats.retries
    if conflicts:
        dsql.fail_next_commits("40001", OC000, times=conflicts)
    response = await client.request(method, path.format(**keys), json=body)
    assert response.status in (200, 201, 204), await response.text()
    retries = db.stats.retries - retries
    return effect(before, await snapshot(db.engine)), retries


async def test_concurrent_updates_of_one_pet_all_succeed(client: Client, db: Database) -> None:
    """Real conflicts, not forced ones: each rename reads the pet and writes it back."""
    assert db.stats is not None
    keys = await _seed(client)
    retries = db.stats.retries
    # At most two others commit while a rename is in flight: three attempts always suffice.
    responses = await asyncio.gather(
        *(client.patch(f"/pets/{keys['pet']}", json={"name": f"Rex #{n}"}) for n in range(3))
    )
    names = [(await _ok(response))["name"] for response in responses]
    print(f"3 concurrent renames: {db.stats.retries - retries} retries")
    assert sorted(names) == ["Rex #0", "Rex #1", "Rex #2"]
    stored = await _ok(await client.get(f"/pets/{keys['pet']}"))
    assert stored["name"] in names
