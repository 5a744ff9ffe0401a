"""Message classes for radio.v1 and grpc.health.v1, built at run time from proto/descriptors.binpb.

Generated ``_pb2`` modules only work with the protobuf runtime that generated them; a descriptor
set works with any protobuf 4.x-7.x a FiftyOne environment happens to have.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTORS = Path(__file__).resolve().parent.parent / "proto" / "descriptors.binpb"

_pool = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes()).file:
    _pool.Add(_file)


def _message(full_name: str) -> Any:
    desc = _pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(_pool).GetPrototype(desc)  # protobuf < 4.22


def enum_value(enum: str, name: str) -> int:
    return _pool.FindEnumTypeByName(enum).values_by_name[name].number


def enum_name(enum: str, number: int) -> str:
    values = _pool.FindEnumTypeByName(enum).values_by_number
    return values[number].name if number in values else str(number)


EmbedRequest = _message("radio.v1.EmbedRequest")
EmbedResponse = _message("radio.v1.EmbedResponse")
ImageInput = _message("radio.v1.ImageInput")
EmbedTextRequest = _message("radio.v1.EmbedTextRequest")
EmbedTextResponse = _message("radio.v1.EmbedTextResponse")
InfoRequest = _message("radio.v1.InfoRequest")
InfoResponse = _message("radio.v1.InfoResponse")
HealthCheckRequest = _message("grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = _message("grpc.health.v1.HealthCheckResponse")

EMBED_METHOD = "/radio.v1.Radio/Embed"
EMBED_TEXT_METHOD = "/radio.v1.Radio/EmbedText"
INFO_METHOD = "/radio.v1.Radio/Info"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
SERVING = enum_value("grpc.health.v1.HealthCheckResponse.ServingStatus", "SERVING")
