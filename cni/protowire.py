"""The protobuf wire format by hand: varints and the (field, wire type, value) records of a message.

Standard library only: the CNI shim uses it on every pod's ADD and DEL, where importing the
protobuf runtime costs more than the call itself (see shim.py); the lab's API server decodes
kubectl's protobuf bodies with the same reader.
"""
from __future__ import annotations

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_bytes_field(number: int, data: bytes) -> bytes:
    """One length-delimited field (string, bytes or an embedded message)."""
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(data)) + data


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at buf[i:] and the index after it; ValueError if buf ends inside it."""
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes):
    """(field number, wire type, value) for every field of one message, in order: varints as
    int, length-delimited and fixed-width values as bytes. Groups are refused (ValueError)."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, i = read_varint(buf, i)
        elif wire == LENGTH_DELIMITED:
            n, i = read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == FIXED64:
            value, i = buf[i:i + 8], i + 8
        elif wire == FIXED32:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not supported")
        yield number, wire, value
