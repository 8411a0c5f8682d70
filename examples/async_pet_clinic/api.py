"""The pet clinic as a FastAPI app: owners and their pets, vets and their specialties.

Build it on a :class:`~sqlalchemy_dsql.integrations.fastapi.Database`::

    from async_pet_clinic.api import create_app
    from sqlalchemy_dsql.integrations.fastapi import Database

    app = create_app(Database("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"))

or run it with ``python -m async_pet_clinic.api``, which needs uvicorn
(``pip install uvicorn``; it is not a dependency of sqlalchemy-dsql). That
reads the same environment as ``uv run pet-clinic`` (``CLUSTER_ENDPOINT``,
``CLUSTER_USER``, ``AWS_REGION``, ``PGPORT``, ``PGHOSTADDR``,
``PGSSLROOTCERT``), starts the local emulator when ``CLUSTER_ENDPOINT`` is not
set, and serves on ``HOST``:``PORT`` (default ``127.0.0.1:8000``); the
OpenAPI page is at ``/docs``.

======  ===========================  =============================================
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

Every write runs in ``@db.transactional``: on an optimistic-concurrency
conflict the whole endpoint runs again in a new transaction, up to the
Database's ``RetryPolicy``; reads use the ``db.read_session`` dependency: no
transaction, one round trip per statement, each statement its own snapshot
(an owner and the pets ``selectinload`` reads for it are two statements, so
a write that commits between them can show an owner with the pets of the
newer state: PostgreSQL's default READ COMMITTED does the same). Answers besides 2xx:

* 422: the request is invalid (FastAPI's ``{"detail": [...]}``, from the
  :mod:`.schemas` models), or a vet names a specialty that does not exist
  (the same shape, ``"type": "unknown_specialty"``);
* 404: no such owner, pet or vet (``{"detail": "Owner <id> not found"}``);
* 409: a specialty that already exists (``{"detail": "..."}``), or a
  conflict still there after the last retry: the integration's
  ``{"error": "conflict", "detail": ..., "attempts": N, "sqlstate": ...}``;
* 503: the database cannot be reached, or a COMMIT's outcome is unknown.
"""

# No ``from __future__ import annotations``: the endpoints are made inside
# create_app, and FastAPI resolves string annotations in the module's globals only.

import importlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, HTTPException, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from sqlalchemy_dsql import schema
from sqlalchemy_dsql.integrations.fastapi import Database, add_exception_handlers, get_or_404

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

__all__ = ["create_app", "main"]

T = TypeVar("T")


async def _specialties(session: AsyncSession, names: list[str]) -> list[Specialty]:
    """The named specialties, in the order named; 422 if any does not exist."""
    found, missing = await specialties_named(session, names)
    if missing:
        raise HTTPException(
            status_code=422,
            detail=[
                {
                    "type": "unknown_specialty",
                    "loc": ["body", "specialties"],
                    "msg": f"no such specialty: {', '.join(missing)} (POST /specialties first)",
                }
            ],
        )
    return found


def create_app(db: Database, *, create_tables: bool = True) -> FastAPI:
    """The pet clinic's API on ``db``; with ``create_tables``, the tables are made at startup.

    The app's lifespan makes ``db``'s engine, creates the tables that do not
    exist yet (:func:`sqlalchemy_dsql.schema.create_all`) and disposes of the
    engine at shutdown.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with db.lifespan(app):
            if create_tables:
                await schema.create_all(db.engine, Base.metadata)
            yield

    app = FastAPI(title="Pet clinic on Aurora DSQL", lifespan=lifespan)
    add_exception_handlers(app)
    # The GET endpoints: no BEGIN/COMMIT, one round trip per statement.
    ReadSession = Annotated[AsyncSession, db.read_session]

    # Owners

    @app.post("/owners", status_code=201)
    @db.transactional
    async def create_owner(session: AsyncSession, body: OwnerIn) -> OwnerOut:
        owner = Owner(name=body.name, city=body.city, telephone=body.telephone)
        owner.pets = [Pet(name=p.name, birth_date=p.birth_date) for p in body.pets]
        session.add(owner)
        await session.flush()  # the server makes the keys
        return OwnerOut.model_validate(owner)

    @app.get("/owners")
    async def list_owners(session: ReadSession) -> list[OwnerOut]:
        query = select(Owner).options(selectinload(Owner.pets)).order_by(Owner.name, Owner.id)
        return [OwnerOut.model_validate(owner) for owner in await session.scalars(query)]

    @app.get("/owners/{owner_id}")
    async def read_owner(owner_id: uuid.UUID, session: ReadSession) -> OwnerOut:
        owner = await get_or_404(session, Owner, owner_id, selectinload(Owner.pets))
        return OwnerOut.model_validate(owner)

    @app.patch("/owners/{owner_id}")
    @db.transactional
    async def update_owner(
        session: AsyncSession, owner_id: uuid.UUID, body: OwnerPatch
    ) -> OwnerOut:
        owner = await get_or_404(session, Owner, owner_id, selectinload(Owner.pets))
        for field, value in body.changes().items():
            setattr(owner, field, value)
        await session.flush()
        return OwnerOut.model_validate(owner)

    @app.delete("/owners/{owner_id}", status_code=204)
    @db.transactional
    async def delete_owner(session: AsyncSession, owner_id: uuid.UUID) -> Response:
        # The pets are loaded so that the cascade deletes them with their owner.
        owner = await get_or_404(session, Owner, owner_id, selectinload(Owner.pets))
        await session.delete(owner)
        await session.flush()
        return Response(status_code=204)

    # Pets

    @app.post("/owners/{owner_id}/pets", status_code=201)
    @db.transactional
    async def create_pet(session: AsyncSession, owner_id: uuid.UUID, body: PetIn) -> PetOut:
        owner = await get_or_404(session, Owner, owner_id)
        pet = Pet(name=body.name, birth_date=body.birth_date, owner_id=owner.id)
        session.add(pet)
        await session.flush()
        return PetOut.model_validate(pet)

    @app.get("/pets/{pet_id}")
    async def read_pet(pet_id: uuid.UUID, session: ReadSession) -> PetOut:
        return PetOut.model_validate(await get_or_404(session, Pet, pet_id))

    @app.patch("/pets/{pet_id}")
    @db.transactional
    async def update_pet(session: AsyncSession, pet_id: uuid.UUID, body: PetPatch) -> PetOut:
        pet = await get_or_404(session, Pet, pet_id)
        for field, value in body.changes().items():
            setattr(pet, field, value)
        await session.flush()
        return PetOut.model_validate(pet)

    @app.delete("/pets/{pet_id}", status_code=204)
    @db.transactional
    async def delete_pet(session: AsyncSession, pet_id: uuid.UUID) -> Response:
        await session.delete(await get_or_404(session, Pet, pet_id))
        await session.flush()
        return Response(status_code=204)

    # Specialties

    @app.post("/specialties", status_code=201)
    @db.transactional
    async def create_specialty(session: AsyncSession, body: SpecialtyIn) -> SpecialtyOut:
        exists = HTTPException(status_code=409, detail=f"Specialty {body.name!r} already exists")
        if await session.get(Specialty, body.name) is not None:
            raise exists
        specialty = Specialty(name=body.name)
        session.add(specialty)
        try:
            await session.flush()
        except IntegrityError as error:  # added by a transaction that committed meanwhile
            raise exists from error
        return SpecialtyOut.model_validate(specialty)

    @app.get("/specialties")
    async def list_specialties(session: ReadSession) -> list[SpecialtyOut]:
        query = select(Specialty).order_by(Specialty.name)
        return [SpecialtyOut.model_validate(s) for s in await session.scalars(query)]

    # Vets

    @app.post("/vets", status_code=201)
    @db.transactional
    async def create_vet(session: AsyncSession, body: VetIn) -> VetOut:
        vet = Vet(name=body.name, specialties=await _specialties(session, body.specialties))
        session.add(vet)
        await session.flush()
        return VetOut.model_validate(vet)

    @app.get("/vets")
    async def list_vets(session: ReadSession) -> list[VetOut]:
        query = select(Vet).options(selectinload(Vet.specialties)).order_by(Vet.name, Vet.id)
        return [VetOut.model_validate(vet) for vet in await session.scalars(query)]

    @app.get("/vets/{vet_id}")
    async def read_vet(vet_id: uuid.UUID, session: ReadSession) -> VetOut:
        vet = await get_or_404(session, Vet, vet_id, selectinload(Vet.specialties))
        return VetOut.model_validate(vet)

    @app.patch("/vets/{vet_id}")
    @db.transactional
    async def update_vet(session: AsyncSession, vet_id: uuid.UUID, body: VetPatch) -> VetOut:
        vet = await get_or_404(session, Vet, vet_id, selectinload(Vet.specialties))
        changes = body.changes()
        if "specialties" in changes:
            vet.specialties = await _specialties(session, changes.pop("specialties"))
        for field, value in changes.items():
            setattr(vet, field, value)
        await session.flush()
        return VetOut.model_validate(vet)

    @app.delete("/vets/{vet_id}", status_code=204)
    @db.transactional
    async def delete_vet(session: AsyncSession, vet_id: uuid.UUID) -> Response:
        # The specialties are loaded so that the vet's vet_specialty rows are deleted too.
        vet = await get_or_404(session, Vet, vet_id, selectinload(Vet.specialties))
        await session.delete(vet)
        await session.flush()
        return Response(status_code=204)

    return app


def main() -> int:
    """``python -m async_pet_clinic.api``: serve the API with uvicorn until interrupted."""
    try:
        uvicorn: Any = importlib.import_module("uvicorn")
    except ImportError:
        print("pet clinic API: this needs uvicorn: pip install uvicorn", file=sys.stderr)
        return 2
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    with engine_factory() as (make_engine, where):
        print(f"pet clinic API on {where}: http://{host}:{port}/docs", flush=True)
        uvicorn.run(create_app(Database(engine_factory=make_engine)), host=host, port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
