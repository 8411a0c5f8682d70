"""Wire-protocol framing helpers and the catalog-version bookkeeping (no server)."""

from __future__ import annotations

import pytest

from sqlalchemy_dsql.local import protocol
from sqlalchemy_dsql.local.catalog import Catalog


def test_split_yields_only_complete_messages() -> None:
    stream = bytearray(
        protocol.message(b"2") + protocol.message(b"C", b"SELECT 1\x00") + b"Z\x00\x00"
    )
    assert [(chr(k), s, e) for k, s, e in protocol.split(stream)] == [("2", 0, 5), ("C", 5, 19)]


def test_split_refuses_a_nonsense_length() -> None:
    with pytest.raises(protocol.ProtocolError, match="length"):
        list(protocol.split(bytearray(b"Q\x00\x00\x00\x01")))


def test_error_round_trip() -> None:
    raw = protocol.error("0A000", "SAVEPOINT is not supported", hint="use separate transactions")
    assert raw[:1] == b"E"
    fields = protocol.parse_error_fields(raw[5:])
    assert fields["S"] == fields["V"] == "ERROR"
    assert (fields["C"], fields["M"], fields["H"]) == (
        "0A000",
        "SAVEPOINT is not supported",
        "use separate transactions",
    )
    fatal = protocol.error("28000", "no", fatal=True)
    assert protocol.parse_error_fields(fatal[5:])["S"] == "FATAL"


@pytest.mark.parametrize(
    ("tag", "rows"),
    [
        ("INSERT 0 5", 5),
        ("UPDATE 12", 12),
        ("DELETE 0", 0),
        ("MERGE 3", 3),
        ("COPY 40", 40),
        ("SELECT 100", 0),
        ("CREATE TABLE", 0),
        ("BEGIN", 0),
    ],
)
def test_rows_modified(tag: str, rows: int) -> None:
    assert protocol.rows_modified(tag) == rows


def test_startup_round_trip() -> None:
    packet = protocol.startup_message({"user": "admin", "database": "postgres"})
    assert protocol.int32(packet) == len(packet)
    assert protocol.int32(packet, 4) == protocol.PROTOCOL_3_0
    assert protocol.parse_startup_pairs(packet[8:]) == {"user": "admin", "database": "postgres"}


def test_startup_with_an_odd_parameter_list_is_refused() -> None:
    with pytest.raises(protocol.ProtocolError, match="odd"):
        protocol.parse_startup_pairs(b"user\x00admin\x00database\x00\x00")


def test_catalog_reports_changes_to_used_relations_only() -> None:
    catalog = Catalog()
    start = catalog.version
    catalog.record(["public.owner"])
    assert catalog.changed_since(start, ["owner"])
    assert catalog.changed_since(start, ["public.owner", "pet"])
    assert not catalog.changed_since(start, ["pet"])
    assert not catalog.changed_since(catalog.version, ["owner"])
    assert not catalog.changed_since(start, [])


def test_catalog_is_conservative_once_history_is_trimmed() -> None:
    catalog = Catalog()
    for number in range(Catalog._HISTORY + 5):
        catalog.record([f"t{number}"])
    assert catalog.changed_since(0, ["unrelated"])
    assert not catalog.changed_since(catalog.version - 1, ["unrelated"])


def test_bind_values_skips_nulls_and_keeps_order() -> None:
    body = (
        protocol.cstring("portal")
        + protocol.cstring("stmt")
        + protocol.pack_int16(1)
        + protocol.pack_int16(1)  # one format code: binary for all
        + protocol.pack_int16(3)
        + protocol.pack_int32(2)
        + b"ab"
        + protocol.pack_int32(-1)  # NULL
        + protocol.pack_int32(0)  # empty value
        + protocol.pack_int16(0)
    )
    assert list(protocol.bind_values(protocol.message(b"B", body))) == [b"ab"]


def test_split_refuses_a_message_over_the_limit_from_its_header() -> None:
    header = b"Q" + protocol.pack_int32(11 * 1024 * 1024)  # announces 11 MiB, none of it sent
    with pytest.raises(protocol.ProtocolError):
        list(protocol.split(header, 10 * 1024 * 1024))
    assert list(protocol.split(header)) == []  # without a limit: waits for the rest
