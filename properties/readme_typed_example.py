"""The typed-code example shown in README.md (a test checks that the two agree)."""

from typing import ClassVar

from crdts import CCounter, EWFlag, ORMap, Record, decode, register


@register  # decode() reads a record's type from its tag, but not its fields
class Item(Record):
    type_name = "Item"
    fields: ClassVar = {"count": CCounter, "bought": EWFlag}


cart = ORMap.of(Item)()  # mypy sees ORMap[Item]
d = cart.at("milk").at("count", CCounter).update("alice", CCounter.increment, 2)
cart.apply("alice", "milk", "apply", "bought", "enable")  # the same kind of edit, untyped
assert cart["milk"] == {"count": 2, "bought": True}  # the value, read-only
assert "eggs" not in cart and cart.get("eggs") is None  # cart["eggs"] raises KeyError
assert decode(d.to_dict()) == d  # the tag "ORMap[Item]" picks the type
