"""PostgreSQL v3 wire-protocol framing: just enough to relay, inspect and forge messages.

The emulator never decodes a message it does not need to. Relayed traffic is
scanned for message boundaries and only the few message types that carry state
(errors, command tags, ready-for-query, the statement and portal names of the
extended protocol) are looked at.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


class Frontend:
    """Type bytes of the messages a client sends (PostgreSQL protocol 3.0)."""

    BIND = 0x42  # B
    CLOSE = 0x43  # C
    DESCRIBE = 0x44  # D
    EXECUTE = 0x45  # E
    FUNCTION_CALL = 0x46  # F
    FLUSH = 0x48  # H
    PARSE = 0x50  # P
    QUERY = 0x51  # Q
    SYNC = 0x53  # S
    TERMINATE = 0x58  # X


class Backend:
    """Type bytes of the messages a server sends (PostgreSQL protocol 3.0)."""

    PARSE_COMPLETE = 0x31  # 1
    BIND_COMPLETE = 0x32  # 2
    CLOSE_COMPLETE = 0x33  # 3
    COMMAND_COMPLETE = 0x43  # C
    DATA_ROW = 0x44  # D
    ERROR_RESPONSE = 0x45  # E
    EMPTY_QUERY_RESPONSE = 0x49  # I
    NOTICE_RESPONSE = 0x4E  # N
    PARAMETER_STATUS = 0x53  # S
    ROW_DESCRIPTION = 0x54  # T
    READY_FOR_QUERY = 0x5A  # Z
    NO_DATA = 0x6E  # n
    PORTAL_SUSPENDED = 0x73  # s
    PARAMETER_DESCRIPTION = 0x74  # t


_INT32 = struct.Struct("!i")
_INT16 = struct.Struct("!h")
_HEADER = struct.Struct("!ci")


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid PostgreSQL message."""


def message(kind: bytes, body: bytes = b"") -> bytes:
    """One backend or frontend message: type byte, length, body."""
    return _HEADER.pack(kind, len(body) + 4) + body


def cstring(value: str) -> bytes:
    return value.encode() + b"\x00"


def read_cstring(data: bytes, offset: int) -> tuple[str, int]:
    """Decode the NUL-terminated string at ``offset``; return it and the next offset."""
    end = data.index(b"\x00", offset)
    return data[offset:end].decode(), end + 1


def split(
    buffer: bytes | bytearray, max_length: int = 0x7FFFFFFF
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(type, start, end)`` for every complete message at the front of ``buffer``.

    ``start`` is the offset of the type byte, ``end`` one past the message. The
    caller removes consumed bytes once it is done with the batch. A message
    announcing more than ``max_length`` bytes is a :class:`ProtocolError` as soon
    as its header arrives.
    """
    offset = 0
    size = len(buffer)
    while size - offset >= 5:
        length = _INT32.unpack_from(buffer, offset + 1)[0]
        if length < 4 or length > max_length:
            raise ProtocolError(f"invalid message length {length}")
        end = offset + 1 + length
        if end > size:
            return
        yield buffer[offset], offset, end
        offset = end


def bind_values(raw: bytes) -> Iterator[bytes]:
    """The parameter values of a whole Bind message (NULLs left out), in order."""
    offset = read_cstring(raw, read_cstring(raw, 5)[1])[1]  # past the portal and statement
    offset += 2 + 2 * int16(raw, offset)  # past the format codes
    count = int16(raw, offset)
    offset += 2
    for _ in range(count):
        length = int32(raw, offset)
        offset += 4
        if length > 0:
            yield raw[offset : offset + length]
            offset += length


def startup_message(parameters: Mapping[str, str]) -> bytes:
    body = _INT32.pack(PROTOCOL_3_0)
    for key, value in parameters.items():
        body += cstring(key) + cstring(value)
    body += b"\x00"
    return _INT32.pack(len(body) + 4) + body


def parse_startup_pairs(body: bytes) -> dict[str, str]:
    """Key/value pairs of a StartupMessage body (after the protocol version)."""
    pairs: dict[str, str] = {}
    items = body.rstrip(b"\x00").split(b"\x00")
    if len(items) % 2:
        raise ProtocolError("startup packet has an odd number of parameter strings")
    for key, value in zip(items[0::2], items[1::2], strict=True):
        pairs[key.decode()] = value.decode()
    return pairs


@dataclass(frozen=True, slots=True)
class ServerError:
    """The fields of an ErrorResponse or NoticeResponse we care about."""

    severity: str
    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None

    def encode(self, kind: bytes = b"E") -> bytes:
        body = b"S" + cstring(self.severity) + b"V" + cstring(self.severity)
        body += b"C" + cstring(self.sqlstate) + b"M" + cstring(self.message)
        if self.detail:
            body += b"D" + cstring(self.detail)
        if self.hint:
            body += b"H" + cstring(self.hint)
        return message(kind, body + b"\x00")


def parse_error_fields(body: bytes | memoryview) -> dict[str, str]:
    fields: dict[str, str] = {}
    raw = bytes(body)
    offset = 0
    while offset < len(raw) and raw[offset] != 0:
        code = chr(raw[offset])
        end = raw.index(b"\x00", offset + 1)
        fields[code] = raw[offset + 1 : end].decode(errors="replace")
        offset = end + 1
    return fields


def error_from_fields(error_fields: Mapping[str, str]) -> bytes:
    """An ErrorResponse carrying exactly ``error_fields`` (as :func:`parse_error_fields` reads)."""
    body = b"".join(code.encode() + cstring(value) for code, value in error_fields.items())
    return message(b"E", body + b"\x00")


def error(
    sqlstate: str,
    text: str,
    *,
    hint: str | None = None,
    detail: str | None = None,
    fatal: bool = False,
) -> bytes:
    severity = "FATAL" if fatal else "ERROR"
    return ServerError(severity, sqlstate, text, detail=detail, hint=hint).encode()


def ready_for_query(status: bytes) -> bytes:
    return message(b"Z", status)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstring(name) + cstring(value))


def authentication(code: int, extra: bytes = b"") -> bytes:
    return message(b"R", _INT32.pack(code) + extra)


def backend_key_data(process_id: int, secret: int) -> bytes:
    return message(b"K", _INT32.pack(process_id) + _INT32.pack(secret))


def command_tag(body: bytes | memoryview) -> str:
    return bytes(body[:-1]).decode()


def rows_modified(tag: str) -> int:
    """Rows a command changed, from its CommandComplete tag (0 for reads and utilities)."""
    verb, _, rest = tag.partition(" ")
    if verb in ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY"):
        count = rest.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0
    return 0


def int32(data: bytes | memoryview, offset: int = 0) -> int:
    return int(_INT32.unpack_from(data, offset)[0])


def int16(data: bytes | memoryview, offset: int = 0) -> int:
    return int(_INT16.unpack_from(data, offset)[0])


def pack_int32(value: int) -> bytes:
    return _INT32.pack(value)


def pack_int16(value: int) -> bytes:
    return _INT16.pack(value)
