"""What a client is told about a running emulator: its URL and its environment.

Shared by :class:`~sqlalchemy_dsql.local.LocalDSQL` (in this process) and
:class:`~sqlalchemy_dsql.local.process.SpawnedDSQL` (in a child), so that an
emulator is reached the same way wherever it runs.
"""

from __future__ import annotations

from urllib.parse import quote

from botocore.credentials import Credentials

from .backend import DATABASE

__all__ = ["client_environ", "client_url"]


def client_url(*, endpoint: str, host: str, port: int, ca_file: str, driver: str, user: str) -> str:
    """``auroradsql+<driver>://<user>@<endpoint>:<port>/postgres?hostaddr=..&sslrootcert=..``.

    No secret is in it: the ``auroradsql`` dialect signs a token per
    connection with the credentials of the usual AWS chain.
    """
    return (
        f"auroradsql+{driver}://{quote(user, safe='')}@{endpoint}:{port}/{DATABASE}"
        f"?hostaddr={host}&sslrootcert={quote(ca_file, safe='/')}"
    )


def client_environ(
    *, credentials: Credentials, region: str, host: str, port: int, ca_file: str
) -> dict[str, str]:
    """The test key pair and Region for the AWS chain, and libpq's variables for the rest."""
    return {
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        "AWS_REGION": region,
        "PGHOSTADDR": host,
        "PGPORT": str(port),
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": ca_file,
    }
