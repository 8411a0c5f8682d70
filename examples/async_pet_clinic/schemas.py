"""The pet clinic's request and response bodies, shared by its FastAPI and aiohttp apps.

Input models check what the database would refuse, so that a bad request is
answered with 422 before any transaction starts: text lengths are those of
the columns in :mod:`.models` (``String(30)`` is at most 30 characters),
blank text is refused, a birth date may not be in the future, unknown fields
are refused. ``*Patch`` models are partial updates: a field left out is left
unchanged, a nullable field (an owner's telephone) is cleared with ``null``,
and ``null`` for any other field is refused. Output models are built from
the ORM objects (``OwnerOut.model_validate(owner)``) once their relationships
are loaded.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

MAX_PETS_PER_REQUEST = 100
"""Pets created with their owner in one request: far below DSQL's 3,000 rows per transaction."""


def _not_in_the_future(day: datetime.date) -> datetime.date:
    if day > datetime.date.today():
        raise ValueError("the birth date is in the future")
    return day


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _text(max_length: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length)


OwnerName = Annotated[str, _text(30)]
City = Annotated[str, _text(80)]
Telephone = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=20, pattern=r"^\+?[0-9 ()./-]+$"
    ),
]
PetName = Annotated[str, _text(30)]
BirthDate = Annotated[datetime.date, AfterValidator(_not_in_the_future)]
SpecialtyName = Annotated[str, _text(80)]
VetName = Annotated[str, _text(30)]
SpecialtyNames = Annotated[list[SpecialtyName], AfterValidator(_unique)]
"""Names of existing specialties, duplicates dropped, in the order given."""


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Patch(_Input):
    def changes(self) -> dict[str, Any]:
        """The fields the request set, and their new values."""
        return self.model_dump(exclude_unset=True)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may be left out, but not set to null")
    return value


# Pydantic validates the values a request gave, not the defaults of fields it left out.
NotNull = AfterValidator(_not_null)


class PetIn(_Input):
    name: PetName
    birth_date: BirthDate


class PetPatch(_Patch):
    name: Annotated[PetName | None, NotNull] = None
    birth_date: Annotated[BirthDate | None, NotNull] = None


class OwnerIn(_Input):
    name: OwnerName
    city: City
    telephone: Telephone | None = None
    pets: list[PetIn] = Field(default_factory=list, max_length=MAX_PETS_PER_REQUEST)


class OwnerPatch(_Patch):
    name: Annotated[OwnerName | None, NotNull] = None
    city: Annotated[City | None, NotNull] = None
    telephone: Telephone | None = None


class SpecialtyIn(_Input):
    name: SpecialtyName


class VetIn(_Input):
    name: VetName
    specialties: SpecialtyNames = Field(default_factory=list)


class VetPatch(_Patch):
    name: Annotated[VetName | None, NotNull] = None
    specialties: Annotated[SpecialtyNames | None, NotNull] = None
    """The vet's whole set of specialties (``[]`` for none), replacing the old one."""


class _Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PetOut(_Output):
    id: uuid.UUID
    name: str
    birth_date: datetime.date
    owner_id: uuid.UUID


class OwnerOut(_Output):
    id: uuid.UUID
    name: str
    city: str
    telephone: str | None
    pets: list[PetOut]
    """By name: the order of a read, also when the owner was just created with them."""

    @field_validator("pets")
    @classmethod
    def _by_name(cls, pets: list[PetOut]) -> list[PetOut]:
        return sorted(pets, key=lambda pet: (pet.name, str(pet.id)))


class SpecialtyOut(_Output):
    name: str


class VetOut(_Output):
    id: uuid.UUID
    name: str
    specialties: list[str]
    """Their names, sorted."""

    @field_validator("specialties", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # From a Vet, the list holds Specialty objects.
        return sorted(getattr(specialty, "name", specialty) for specialty in value)
