"""How a page of a top-level list is read, planned from exact counts: any filters, any sort, any page.

Both stores keep the totals per combination of filter values (schema.py), so before
reading a page they know exactly how many rows match, and how many match per value
of each filter field. That settles what an index alone cannot:

- a sort key that is a filter field (`sort=state`, `sort=-priority,title`) splits
  the list into groups of one value each, whose sizes are known: the page lies in
  one or two of them, found by counting, and each is read with that value as one
  more filter and the remaining keys as its order (`split`), instead of sorting
  every matching row;
- a page nearer the end than the start is read from the end: the order reversed,
  the offset counted from the end, the rows turned back (`Part.reverse`), so the
  last page costs what the first does;
- how many rows an index walk in sort order reads before it has found the page is
  about (offset + limit) x rows / matching rows; `walk_cost` tells a store when that
  is cheaper than fetching every match and sorting it.

Pure: no SQL here. The stores render each `Part` in their own SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Sort = tuple[tuple[str, bool], ...]  # (field name, descending)
Groups = Sequence[tuple[tuple[Any, ...], int]]  # (values of the split keys, rows) in any order
MOST_PARTS = 4  # a page spread over more groups than this is read in one statement instead


@dataclass(frozen=True)
class Part:
    """One statement's share of a page: its filters (None among values: IS NULL), order, offset and limit.

    `reverse`: read in the opposite order from `offset` counted from the end, then
    reverse the rows. `count`: how many rows its filters match (a split group's size).
    """

    filters: Mapping[str, tuple[Any, ...]]
    sort: Sort
    offset: int
    limit: int
    count: int
    reverse: bool = False


def split_keys(sort: Sort, dims: Sequence[str]) -> list[str]:
    """Return the leading sort keys that are filter fields (counted per value): the page is found by their groups."""
    keys: list[str] = []
    for name, _ in sort:
        if name not in dims or name in keys:
            break
        keys.append(name)
    return keys


def whole(filters: Mapping[str, tuple[Any, ...]], sort: Sort, offset: int, limit: int, count: int) -> list[Part]:
    """Return the page as one part, read from the nearer end."""
    if offset >= count:
        return []
    return [_part(filters, sort, offset, min(limit, count - offset), count)]


def split(
    filters: Mapping[str, tuple[Any, ...]], sort: Sort, offset: int, limit: int, keys: Sequence[str], groups: Groups
) -> list[Part] | None:
    """Return the parts of a page over the groups of `keys` (the leading sort keys), or None if too many.

    Groups are ordered as the stores order rows: each key ascending or descending,
    NULL first ascending and last descending; strings by code point (UTF-8 bytes,
    as SQLite's BINARY and PostgreSQL's "C" collation compare them).
    """
    ordered = list(groups)
    for i in reversed(range(len(keys))):  # stable sorts, last key first
        desc = sort[i][1]
        ordered.sort(key=_null_first(i), reverse=desc)
    # The groups' rows keep the whole order's last step: id in the last key's direction.
    rest = sort[len(keys) :] or (("id", sort[-1][1]),)
    parts: list[Part] = []
    for values, count in ordered:
        if count <= 0:
            continue
        if offset >= count:
            offset -= count
            continue
        take = min(limit, count - offset)
        narrowed = {**filters, **{key: (value,) for key, value in zip(keys, values, strict=True)}}
        parts.append(_part(narrowed, rest, offset, take, count))
        limit -= take
        offset = 0
        if limit == 0:
            break
        if len(parts) >= MOST_PARTS:
            return None
    return parts


def _null_first(i: int) -> Callable[[tuple[tuple[Any, ...], int]], tuple[bool, Any]]:
    def key(group: tuple[tuple[Any, ...], int]) -> tuple[bool, Any]:
        value = group[0][i]
        return (value is not None, value if value is not None else 0)

    return key


def _part(filters: Mapping[str, tuple[Any, ...]], sort: Sort, offset: int, limit: int, count: int) -> Part:
    from_end = count - offset - limit
    if from_end < offset:
        return Part(filters, sort, from_end, limit, count, reverse=True)
    return Part(filters, sort, offset, limit, count)


def walk_cost(part: Part, rows: int) -> float:
    """Return about how many rows a walk in the part's order reads to find it, among `rows` in all."""
    if part.count <= 0:
        return 0.0
    return (part.offset + part.limit) * rows / part.count
