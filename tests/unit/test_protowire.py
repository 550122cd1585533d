"""The hand-written wire-format reader against messages the protobuf library serialises."""
import struct

import pytest
from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2
from hypothesis import given
from hypothesis import strategies as st
from kubeweft.cni import protowire


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_varint_round_trip(n):
    data = protowire.encode_varint(n)
    assert protowire.read_varint(data + b"\xff", 0) == (n, len(data))
    # the library leaves a zero out of the message; any other value is the tag byte and our varint
    assert wrappers_pb2.UInt64Value(value=n).SerializeToString() == (b"\x08" + data if n else b"")


def test_truncated_varint_is_a_value_error():
    with pytest.raises(ValueError, match="truncated"):
        protowire.read_varint(b"\x80\x80", 0)


def test_fields_of_each_wire_type():
    ts = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5).SerializeToString()
    assert list(protowire.fields(ts)) == [(1, protowire.VARINT, 1_700_000_000), (2, protowire.VARINT, 5)]
    double = wrappers_pb2.DoubleValue(value=2.5).SerializeToString()
    assert list(protowire.fields(double)) == [(1, protowire.FIXED64, struct.pack("<d", 2.5))]
    single = wrappers_pb2.FloatValue(value=0.5).SerializeToString()
    assert list(protowire.fields(single)) == [(1, protowire.FIXED32, struct.pack("<f", 0.5))]
    value = struct_pb2.Value(string_value="pod").SerializeToString()
    assert list(protowire.fields(value)) == [(3, protowire.LENGTH_DELIMITED, b"pod")]


def test_encode_bytes_field_is_what_the_library_writes():
    assert protowire.encode_bytes_field(1, b"x" * 300) == \
        wrappers_pb2.BytesValue(value=b"x" * 300).SerializeToString()


def test_groups_are_refused():
    with pytest.raises(ValueError, match="wire type 3"):
        list(protowire.fields(b"\x0b"))
