"""The fields a sender set in a request message: the one rule every service's ``spec_from_proto`` follows.

proto3 cannot tell "left unset" from "set to zero" for a plain scalar, so such a field at its zero ("", 0, false,
an empty list) counts as unset and the spec's default applies. Where zero must be a real value the proto declares
the field ``optional`` (presence): it counts as set whenever the sender set it, 0 included; so does a sub-message.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def set_fields(message: Message) -> dict[str, Any]:
    """``message`` as a dict by proto field name, holding only the fields set (see the module docstring); plain
    Python values throughout (sub-messages as dicts, repeated fields as lists, int64 as int, not JSON's string)."""
    return {field.name: _value(field, value) for field, value in message.ListFields()}


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return list(value) if field.is_repeated else value
    return [set_fields(item) for item in value] if field.is_repeated else set_fields(value)
