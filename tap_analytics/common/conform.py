"""Conforming, compiled: `compile_conformer(schema)` gives exactly the SDK's
`conform_record_data_types` result (RECURSIVE level: date-times, dates, bytes, NaN/inf ->
null, exclusive booleans, nested objects, uniform lists, unmapped properties dropped or kept
by `additionalProperties`), but reads the schema once per stream instead of once per field of
every record, and returns the record itself when nothing needs to change (the common case for
JSON-born records). `page_ok()` checks a whole page at C speed.

Uses the SDK's own predicates and primitive conformer (`singer_sdk.helpers._typing`, checked
against singer-sdk 0.54.9); tests/test_fastpath.py compares the result with the SDK's.
"""

from __future__ import annotations

import typing as t

#: Value types the SDK's primitive conformer returns unchanged (bool is an int subclass,
#: but type() is exact, so list it too).
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
#: List item types the SDK's primitive conformer returns unchanged whatever the item
#: schema (other than an exclusive boolean): floats are not (NaN and ±inf become None).
_LIST_PLAIN = frozenset({str, int, bool, type(None)})
#: Marks a property of exclusive boolean type in a compiled conformer.
_BOOL = object()



Conformer = t.Callable[[dict, list], dict]



def _replaced(record: dict, changed: dict, skip: frozenset = frozenset()) -> dict:
    """A copy of `record` with the `changed` values, without the `skip` keys (in order)."""
    return {key: changed.get(key, value) for key, value in record.items() if key not in skip}

def _sdk_typing() -> t.Any:
    # Checked against singer-sdk 0.54.9: the schema predicates and the primitive
    # conformer live in the private module `singer_sdk.helpers._typing`. Using the SDK's
    # own functions (at compile time, and for rare non-plain values) keeps its semantics.
    from singer_sdk.helpers import _typing

    return _typing


def compile_conformer(
    schema: dict, parent: str | None = None, *, floats_as_is: bool = False
) -> Conformer:
    """A function `conform(record, unmapped) -> record` equal to the SDK's RECURSIVE
    `_conform_record_data_types(record, schema, RECURSIVE, parent)`; property paths it
    drops are appended to `unmapped`. The input record is returned as is (not copied)
    when no field changes.

    `floats_as_is=True` leaves float values alone (the SDK turns NaN and ±inf into None):
    for a caller that encodes with msgspec, which writes NaN and ±inf as `null` too, so the
    JSON is the same and finite floats cost no Python-level check."""
    typing_ = _sdk_typing()
    properties: dict = schema.get("properties") or {}
    keep_unknown = bool(schema.get("additionalProperties"))
    #: name -> None (plain: the SDK's primitive conform), _BOOL (an exclusive boolean)
    #: or a per-value function (nested object, uniform list)
    specs: dict[str, t.Any] = {}
    for name, prop_schema in properties.items():
        specs[name] = _compile_property(name, prop_schema, parent, typing_, floats_as_is)

    missing = object()
    plain = _PLAIN_TYPES | {float} if floats_as_is else _PLAIN_TYPES
    boolean = _BOOL
    primitive = typing_._conform_primitive_property
    specs_get = specs.get

    def generic(record: dict, unmapped: list) -> dict:
        changed: dict = {}
        dropped: list | None = None
        for key, value in record.items():
            spec = specs_get(key, missing)
            if spec is None:
                if value.__class__ in plain:
                    continue
                new = primitive(value, properties[key])
            elif spec is boolean:
                if value is None or value.__class__ is bool:
                    continue
                new = primitive(value, properties[key])
            elif spec is missing:
                if keep_unknown:
                    continue
                unmapped.append(key if parent is None else f"{parent}.{key}")
                if dropped is None:
                    dropped = []
                dropped.append(key)
                continue
            else:
                new = spec(value, unmapped)
            if new is not value:
                changed[key] = new
        if not changed and dropped is None:
            # The SDK would build an equal copy; the record is serialised right away.
            return record
        return _replaced(record, changed, frozenset(dropped or ()))

    known = frozenset(properties)
    #: plain properties keep these unchanged (the SDK's primitive conform returns dicts and
    #: lists of a property without a nested schema as they are)
    allowed = frozenset({*plain, dict, list})
    #: (key, spec, the nested object's conformer or None): for a nested object whose
    #: own properties are all plain, its C-level check is done right here (no call)
    special = [(key, spec, getattr(spec, "sub", None), getattr(spec, "leaf_items", None))
               for key, spec in specs.items() if spec is not None]
    issuperset_known = known.issuperset
    issuperset_allowed = allowed.issuperset

    def conform(record: dict, unmapped: list) -> dict:
        # Common case, checked in C: known keys only, JSON-born value types only. Then
        # only the few special properties (booleans, nested objects, lists) need a look.
        if not (issuperset_known(record) and issuperset_allowed(map(type, record.values()))):
            return generic(record, unmapped)
        changed: dict = {}
        for key, spec, sub, items in special:
            value = record.get(key)
            if value is None:
                continue
            if spec is boolean:
                if value.__class__ is bool:
                    continue
                new = primitive(value, properties[key])
            elif items is not None and value.__class__ is list:
                for item in value:
                    if not (item.__class__ is dict and items.known_check(item)
                            and items.allowed_check(map(type, item.values()))):
                        break
                else:
                    continue  # what spec(value) returns: the list itself
                new = spec(value, unmapped)
            elif sub is not None and value.__class__ is dict:
                if sub.leaf and sub.known_check(value) and sub.allowed_check(
                        map(type, value.values())):
                    continue  # what sub(value) returns: the object itself
                new = sub(value, unmapped)
            else:
                new = spec(value, unmapped)
            if new is not value:
                changed[key] = new
        if not changed:
            return record  # the SDK would build an equal copy; it is serialised at once
        return _replaced(record, changed)

    def page_ok(rows: list[dict], json_values: bool = False) -> bool:
        """True when `conform(row)` is `row` (nothing changed, nothing unmapped) for every
        row of `rows` (dicts): checked a property at a time over all rows, most of it in
        C. False means: conform the rows one by one. `json_values=True`: every value is
        known to come from a JSON parser (str, int, float, bool, None, list, dict), which
        the plain-type check accepts when floats are left as they are (floats_as_is), so
        it is skipped then."""
        if not keep_unknown and not all(map(issuperset_known, rows)):
            return False  # an unknown key: dropped (and reported) row by row
        if not (json_values and floats_as_is) and not all(
                [issuperset_allowed(map(type, row.values())) for row in rows]):
            return False
        for key, spec, sub, _items in special:
            values = [value for row in rows if (value := row.get(key)) is not None]
            if not values:
                continue
            if spec is boolean:
                if not all([value.__class__ is bool for value in values]):
                    return False
            elif sub is not None:  # a nested object
                if not (all([value.__class__ is dict for value in values])
                        and sub.page_ok(values, json_values)):
                    return False
            else:
                kind, item_sub = getattr(spec, "page_items", (None, None))
                if kind is None or not all([value.__class__ is list for value in values]):
                    return False
                items = [item for value in values for item in value]
                if kind == "objects":
                    if not (all([item.__class__ is dict for item in items])
                            and item_sub.page_ok(items, json_values)):
                        return False
                elif not all([item.__class__ in _LIST_PLAIN for item in items]):
                    return False
        return True

    conform.leaf = not special  # type: ignore[attr-defined]
    conform.known_check = issuperset_known  # type: ignore[attr-defined]
    conform.allowed_check = issuperset_allowed  # type: ignore[attr-defined]
    conform.page_ok = page_ok  # type: ignore[attr-defined]
    return conform


def _compile_property(name: str, prop_schema: dict, parent: str | None, typing_: t.Any,
                      floats_as_is: bool) -> t.Any:
    """None for a plain property, _BOOL for an exclusive boolean (None and bools pass
    unchanged, anything else becomes `value != 0`), else the per-value conformer."""
    path = name if parent is None else f"{parent}.{name}"
    primitive = typing_._conform_primitive_property
    uniform_list = bool(typing_.is_uniform_list(prop_schema))
    object_with_props = bool(typing_.is_object_type(prop_schema)) and "properties" in prop_schema
    exclusive_bool = typing_._is_exclusive_boolean_type(prop_schema)
    if not (uniform_list or object_with_props):
        return _BOOL if exclusive_bool else None

    sub = (compile_conformer(prop_schema, path, floats_as_is=floats_as_is)
           if object_with_props else None)
    item_schema = prop_schema.get("items") if uniform_list else None
    item_is_object = bool(item_schema is not None and typing_.is_object_type(item_schema))
    item_sub = (
        compile_conformer(item_schema, path, floats_as_is=floats_as_is)
        if item_is_object and "properties" in (item_schema or {})
        else None
    )

    if sub is not None and not uniform_list:  # a nested object (the usual case)

        def conform_object(value: t.Any, unmapped: list) -> t.Any:
            if isinstance(value, dict):
                return sub(value, unmapped)
            return primitive(value, prop_schema)

        conform_object.sub = sub  # type: ignore[attr-defined]
        return conform_object

    def conform_value(value: t.Any, unmapped: list) -> t.Any:
        if uniform_list and isinstance(value, list):
            out = []
            same = True
            for item in value:
                if item_is_object and isinstance(item, dict):
                    # (an object item schema without properties fails in the SDK; kept)
                    new = item if item_sub is None else item_sub(item, unmapped)
                else:
                    new = primitive(item, item_schema)
                same = same and new is item
                out.append(new)
            return value if same else out
        if sub is not None and isinstance(value, dict):
            return sub(value, unmapped)
        return primitive(value, prop_schema)

    if uniform_list and sub is None:
        # what a page check may conclude for a list value (see page_ok)
        if item_is_object and item_sub is not None:
            conform_value.page_items = ("objects", item_sub)  # type: ignore[attr-defined]
        elif not item_is_object and not typing_._is_exclusive_boolean_type(item_schema or {}):
            conform_value.page_items = ("plain", None)  # type: ignore[attr-defined]
    if uniform_list and item_is_object and item_sub is not None and item_sub.leaf:
        # A list of objects whose properties are all plain: an item passing its
        # object's C-level check comes back as is, and so does a list of such items.
        conform_value.leaf_items = item_sub  # type: ignore[attr-defined]
    return conform_value



__all__ = ["Conformer", "compile_conformer"]
