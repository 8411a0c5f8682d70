"""The pet clinic as an aiohttp app: the same API as :mod:`.api`, on aiohttp.

Build it on a :class:`~sqlalchemy_dsql.integrations.aiohttp.Database`::

    from aiohttp import web
    from async_pet_clinic.web import create_app
    from sqlalchemy_dsql.integrations.aiohttp import Database

    web.run_app(create_app(Database("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws")))

or run it with ``python -m async_pet_clinic.web``, which reads the same
environment as ``uv run pet-clinic`` (``CLUSTER_ENDPOINT``, ``CLUSTER_USER``,
``AWS_REGION``, ``PGPORT``, ``PGHOSTADDR``, ``PGSSLROOTCERT``), starts the
local emulator when ``CLUSTER_ENDPOINT`` is not set, and serves on
``HOST``:``PORT`` (default ``127.0.0.1:8080``).

The routes, bodies and answers are those of :mod:`async_pet_clinic.api`.
POST    /owners                      an owner, with pets (``OwnerIn``): 201
GET     /owners                      every owner with their pets, by name
GET     /owners/{owner_id}           one owner with their pets
PATCH   /owners/{owner_id}           change name, city, telephone (``OwnerPatch``)
DELETE  /owners/{owner_id}           the owner and their pets: 204
POST    /owners/{owner_id}/pets      a pet of this owner (``PetIn``): 201
GET     /pets/{pet_id}               one pet
PATCH   /pets/{pet_id}               change name, birth date (``PetPatch``)
DELETE  /pets/{pet_id}               204
POST    /specialties                 a specialty (``SpecialtyIn``): 201, or 409 if it exists
GET     /specialties                 every specialty, by name
POST    /vets                        a vet with existing specialties (``VetIn``): 201
GET     /vets                        every vet with their specialties, by name
GET     /vets/{vet_id}               one vet
PATCH   /vets/{vet_id}               change name, replace specialties (``VetPatch``)
DELETE  /vets/{vet_id}               204
======  ===========================  =============================================

Every write is a ``@transactional`` handler: on an optimistic-concurrency
conflict the whole handler runs again in a new transaction, up to the
Database's ``RetryPolicy``; reads run in ``read_session_for(request)``: no
transaction, one round trip per statement, each statement its own snapshot
(an owner and the pets ``selectinload`` reads for it are two statements). Bodies and key
segments are read with ``json_body`` and ``path_param`` through the
:mod:`.schemas` models. Answers besides 2xx, all JSON with an ``"error"``:

* 422 ``validation``: a body that is not JSON or not valid (``"detail"`` is
  pydantic's list of errors, without the input), a key that is not a UUID, or
  a vet naming a specialty that does not exist (``"type": "unknown_specialty"``);
* 404 ``not_found``: no such owner, pet or vet;
* 409 ``exists``: a specialty that already exists; 409 ``conflict``: a
  conflict still there after the last retry (with ``attempts`` and ``sqlstate``);
* 503: the database cannot be reached, or a COMMIT's outcome is unknown.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from sqlalchemy_dsql import schema
from sqlalchemy_dsql.integrations.aiohttp import (
    Database,
    error_middleware,
    get_or_404,
    json_body,
    path_param,
    read_session_for,
    transactional,
)

from .clinic import engine_factory
from .models import Base, Owner, Pet, Specialty, Vet, specialties_named
from .schemas import (
    OwnerIn,
    OwnerOut,
    OwnerPatch,
    PetIn,
    PetOut,
    PetPatch,
    SpecialtyIn,
    SpecialtyOut,
    VetIn,
    VetOut,
    VetPatch,
)

__all__ = ["create_app", "main", "routes"]

T = TypeVar("T")
routes = web.RouteTableDef()


def _fail(error_class: type[web.HTTPError], error: str, detail: Any) -> NoReturn:
    """Refuse the request with the integration's JSON body: ``{"error": ..., "detail": ...}``."""
    raise error_class(
        text=json.dumps({"error": error, "detail": detail}), content_type="application/json"
    )


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def _json_list(models: Iterable[BaseModel]) -> web.Response:
    return web.json_response([model.model_dump(mode="json") for model in models])


def _key(request: web.Request, name: str) -> uuid.UUID:
    return path_param(request, name, uuid.UUID)


async def _specialties(session: AsyncSession, names: list[str]) -> list[Specialty]:
    """The named specialties, in the order named; 422 if any does not exist."""
    found, missing = await specialties_named(session, names)
    if missing:
        _fail(
            web.HTTPUnprocessableEntity,
            "validation",
            [
                {
                    "type": "unknown_specialty",
                    "loc": ["specialties"],
                    "msg": f"no such specialty: {', '.join(missing)} (POST /specialties first)",
                }
            ],
        )
    return found


# Owners


@routes.post("/owners")
@transactional
async def create_owner(request: web.Request, session: AsyncSession) -> web.Response:
    body = await json_body(request, OwnerIn.model_validate)
    owner = Owner(name=body.name, city=body.city, telephone=body.telephone)
    owner.pets = [Pet(name=p.name, birth_date=p.birth_date) for p in body.pets]
    session.add(owner)
    await session.flush()  # the server makes the keys
    return _json(OwnerOut.model_validate(owner), status=201)


@routes.get("/owners")
async def list_owners(request: web.Request) -> web.Response:
    query = select(Owner).options(selectinload(Owner.pets)).order_by(Owner.name, Owner.id)
    async with read_session_for(request) as session:
        owners = list(await session.scalars(query))
    return _json_list(OwnerOut.model_validate(owner) for owner in owners)


@routes.get("/owners/{owner_id}")
async def read_owner(request: web.Request) -> web.Response:
    owner_id = _key(request, "owner_id")
    async with read_session_for(request) as session:
        owner = await get_or_404(session, Owner, owner_id, selectinload(Owner.pets))
    return _json(OwnerOut.model_validate(owner))


@routes.patch("/owners/{owner_id}")
@transactional
async def update_owner(request: web.Request, session: AsyncSession) -> web.Response:
    owner_id = _key(request, "owner_id")
    body = await json_body(request, OwnerPatch.model_validate)
    owner = await get_or_404(session, Owner, owner_id, selectinload(Owner.pets))
    for field, value in body.changes().items():
        setattr(owner, field, value)
    await session.flush()
    return _json(OwnerOut.model_validate(owner))


@routes.delete("/owners/{owner_id}")
@transactional
async def delete_owner(request: web.Request, session: AsyncSession) -> web.Response:
    # The pets are loaded so that the cascade deletes them with their owner.
    owner = await get_or_404(session, Owner, _key(request, "owner_id"), selectinload(Owner.pets))
    await session.delete(owner)
    await session.flush()
    return web.Response(status=204)


# Pets


@routes.post("/owners/{owner_id}/pets")
@transactional
async def create_pet(request: web.Request, session: AsyncSession) -> web.Response:
    owner_id = _key(request, "owner_id")
    body = await json_body(request, PetIn.model_validate)
    owner = await get_or_404(session, Owner, owner_id)
    pet = Pet(name=body.name, birth_date=body.birth_date, owner_id=owner.id)
    session.add(pet)
    await session.flush()
    return _json(PetOut.model_validate(pet), status=201)


@routes.get("/pets/{pet_id}")
async def read_pet(request: web.Request) -> web.Response:
    pet_id = _key(request, "pet_id")
    async with read_session_for(request) as session:
        pet = await get_or_404(session, Pet, pet_id)
    return _json(PetOut.model_validate(pet))


@routes.patch("/pets/{pet_id}")
@transactional
async def update_pet(request: web.Request, session: AsyncSession) -> web.Response:
    pet_id = _key(request, "pet_id")
    body = await json_body(request, PetPatch.model_validate)
    pet = await get_or_404(session, Pet, pet_id)
    for field, value in body.changes().items():
        setattr(pet, field, value)
    await session.flush()
    return _json(PetOut.model_validate(pet))


@routes.delete("/pets/{pet_id}")
@transactional
async def delete_pet(request: web.Request, session: AsyncSession) -> web.Response:
    await session.delete(await get_or_404(session, Pet, _key(request, "pet_id")))
    await session.flush()
    return web.Response(status=204)


# Specialties


@routes.post("/specialties")
@transactional
async def create_specialty(request: web.Request, session: AsyncSession) -> web.Response:
    body = await json_body(request, SpecialtyIn.model_validate)
    exists = f"Specialty {body.name!r} already exists"
    if await session.get(Specialty, body.name) is not None:
        _fail(web.HTTPConflict, "exists", exists)
    specialty = Specialty(name=body.name)
    session.add(specialty)
    try:
        await session.flush()
    except IntegrityError:  # added by a transaction that committed meanwhile
        _fail(web.HTTPConflict, "exists", exists)
    return _json(SpecialtyOut.model_validate(specialty), status=201)


@routes.get("/specialties")
async def list_specialties(request: web.Request) -> web.Response:
    async with read_session_for(request) as session:
        specialties = list(await session.scalars(select(Specialty).order_by(Specialty.name)))
    return _json_list(SpecialtyOut.model_validate(s) for s in specialties)


# Vets


@routes.post("/vets")
@transactional
async def create_vet(request: web.Request, session: AsyncSession) -> web.Response:
    body = await json_body(request, VetIn.model_validate)
    vet = Vet(name=body.name, specialties=await _specialties(session, body.specialties))
    session.add(vet)
    await session.flush()
    return _json(VetOut.model_validate(vet), status=201)


@routes.get("/vets")
async def list_vets(request: web.Request) -> web.Response:
    query = select(Vet).options(selectinload(Vet.specialties)).order_by(Vet.name, Vet.id)
    async with read_session_for(request) as session:
        vets = list(await session.scalars(query))
    return _json_list(VetOut.model_validate(vet) for vet in vets)


@routes.get("/vets/{vet_id}")
async def read_vet(request: web.Request) -> web.Response:
    vet_id = _key(request, "vet_id")
    async with read_session_for(request) as session:
        vet = await get_or_404(session, Vet, vet_id, selectinload(Vet.specialties))
    return _json(VetOut.model_validate(vet))


@routes.patch("/vets/{vet_id}")
@transactional
async def update_vet(request: web.Request, session: AsyncSession) -> web.Response:
    vet_id = _key(request, "vet_id")
    body = await json_body(request, VetPatch.model_validate)
    vet = await get_or_404(session, Vet, vet_id, selectinload(Vet.specialties))
    changes = body.changes()
    if "specialties" in changes:
        vet.specialties = await _specialties(session, changes.pop("specialties"))
    for field, value in changes.items():
        setattr(vet, field, value)
    await session.flush()
    return _json(VetOut.model_validate(vet))


@routes.delete("/vets/{vet_id}")
@transactional
async def delete_vet(request: web.Request, session: AsyncSession) -> web.Response:
    # The specialties are loaded so that the vet's vet_specialty rows are deleted too.
    vet = await get_or_404(session, Vet, _key(request, "vet_id"), selectinload(Vet.specialties))
    await session.delete(vet)
    await session.flush()
    return web.Response(status=204)


def create_app(db: Database, *, create_tables: bool = True) -> web.Application:
    """The pet clinic's API on ``db``; with ``create_tables``, the tables are made at startup.

    The app's ``cleanup_ctx`` makes ``db``'s engine, creates the tables that
    do not exist yet (:func:`sqlalchemy_dsql.schema.create_all`) and disposes
    of the engine at cleanup.
    """

    async def tables(app: web.Application) -> AsyncIterator[None]:
        if create_tables:
            await schema.create_all(db.engine, Base.metadata)
        yield

    app = web.Application(middlewares=[error_middleware])
    app.cleanup_ctx.extend([db.cleanup_ctx, tables])  # the engine first: it is disposed last
    app.add_routes(routes)
    return app


def main() -> int:
    """``python -m async_pet_clinic.web``: serve the API until interrupted."""
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    with engine_factory() as (make_engine, where):
        print(f"pet clinic API (aiohttp) on {where}", flush=True)
        web.run_app(create_app(Database(engine_factory=make_engine)), host=host, port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
