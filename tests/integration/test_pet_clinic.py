"""The pet clinic demo: in process, and as ``pet-clinic`` on both of its paths.

The real-cluster path (``CLUSTER_ENDPOINT`` set) is run against the emulator
as if it were a cluster: endpoint, region and credentials from the
environment, verify-full TLS against the CA named by ``PGSSLROOTCERT``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from async_pet_clinic.clinic import CUSTOM_ROLE_SCHEMA, run_demo
from sqlalchemy import text

from harness.clinic import clean_environment, cluster_environment
from harness.engine import async_engine, secrets_of
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

PET_CLINIC = str(Path(sys.executable).with_name("pet-clinic"))
STEPS = [
    "drop and create 5 tables",
    "insert 2 owners with pets, concurrently",
    "insert 2 specialties",
    "insert 2 vets with specialties, concurrently",
    "read pets, owners and vets, concurrently",
    "update an owner, a pet and a vet, concurrently",
    "8 clerks book the same pet at once",
    "delete an owner and their pets",
]


async def _pet_clinic(environment: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PET_CLINIC,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_demo_in_process(dsql: LocalDSQL) -> None:
    engine = async_engine(dsql)
    try:
        report = await run_demo(engine, "the test emulator")
    finally:
        await engine.dispose()
    assert [s.name for s in report.steps] == STEPS
    assert report.stats.gave_up == 0
    assert report.stats.transactions >= 20
    rendered = report.render()
    assert "every check passed" in rendered
    assert f"{report.stats.retries} conflicts retried" in rendered
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM owner"))).scalars().all()
    assert names == ["Mary Major"]
    await engine.dispose()


async def test_pet_clinic_as_a_cluster_admin(dsql: LocalDSQL) -> None:
    code, out, err = await _pet_clinic(cluster_environment(dsql))
    assert code == 0, err
    assert f"pet clinic on Aurora DSQL at {dsql.endpoint} as admin" in out
    assert "every check passed" in out
    for secret in secrets_of(dsql):
        assert secret not in out + err


async def test_pet_clinic_as_a_custom_role_in_its_schema(dsql: LocalDSQL) -> None:
    admin = async_engine(dsql, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = 'clinic'"))
            if not exists:
                await conn.execute(text("CREATE ROLE clinic WITH LOGIN"))
            await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {CUSTOM_ROLE_SCHEMA}"))
            await conn.execute(
                text(f"GRANT USAGE, CREATE ON SCHEMA {CUSTOM_ROLE_SCHEMA} TO clinic")
            )
        code, out, err = await _pet_clinic(cluster_environment(dsql, CLUSTER_USER="clinic"))
        assert code == 0, err
        assert "as clinic" in out
        async with admin.connect() as conn:
            tables = await conn.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1"),
                {"s": CUSTOM_ROLE_SCHEMA},
            )
            assert list(tables) == ["owner", "pet", "specialty", "vet", "vet_specialty"]
    finally:
        await admin.dispose()


async def test_pet_clinic_without_configuration_starts_its_own_emulator() -> None:
    code, out, err = await _pet_clinic(clean_environment())
    assert code == 0, err
    assert "starting the local emulator" in out
    assert "pet clinic on the local emulator" in out
    assert "every check passed" in out


async def test_a_wrong_endpoint_fails_with_a_clear_error(dsql: LocalDSQL) -> None:
    # The endpoint names its Region, which beats AWS_REGION: a wrong one there is wrong.
    wrong = dsql.endpoint.replace(f".{dsql.region}.", ".eu-west-1.")
    environment = cluster_environment(dsql, CLUSTER_ENDPOINT=wrong)
    code, _, err = await _pet_clinic(environment)
    assert code == 2
    assert err.startswith("pet-clinic: ")
    assert "eu-west-1" in err
    assert "Traceback" not in err
