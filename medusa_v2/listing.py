"""List requests: page/limit, sort, filters and `q` parsed once; pagination headers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .declaration import Declaration, check_text, text_integer
from .invalid import InvalidRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_PAGE = 10**9  # far past any real page; keeps OFFSET arithmetic in int64
MAX_Q_LENGTH = 200


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a list request asks for, validated against the resource declaration."""

    page: int = 1
    limit: int = DEFAULT_LIMIT
    sort: tuple[tuple[str, bool], ...] = ()  # (field name, descending); id tiebreak added by stores
    filters: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # field name -> allowed values
    q: str | None = None

    @property
    def offset(self) -> int:
        """Return the number of rows before this page."""
        return (self.page - 1) * self.limit


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its items and how many items match in all."""

    items: Sequence[Any]
    count: int


def _single(args: Mapping[str, list[str]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"Query parameter '{name}' given more than once")
    return values[0]


def _positive(args: Mapping[str, list[str]], name: str, default: int, high: int) -> int:
    raw = _single(args, name)
    if raw is None:
        return default
    value = text_integer(raw, 1, high)
    if value is None:
        raise InvalidRequest(f"Invalid '{name}': must be an integer from 1 to {high}")
    return value


def parse_list_query(decl: Declaration | None, args: Mapping[str, list[str]]) -> ListQuery:
    """Validate a list request's query parameters (400 naming the parameter)."""
    page = _positive(args, "page", 1, MAX_PAGE)
    limit = _positive(args, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    sort = _parse_sort(decl, _single(args, "sort"), _single(args, "order"))
    q = _single(args, "q")
    if q is not None:
        if decl is None or not decl.search_fields:
            raise InvalidRequest("Invalid 'q': this resource has no search")
        if len(q) > MAX_Q_LENGTH:
            raise InvalidRequest(f"Invalid 'q': at most {MAX_Q_LENGTH} characters")
        try:
            check_text(q)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid 'q': {exc}") from None
        q = q or None
    filters: dict[str, tuple[Any, ...]] = {}
    for f in decl.filter_fields if decl else ():
        raw = None
        for alias in dict.fromkeys((f.dash_name, f.json_name, f.name)):
            raw = _single(args, alias) if raw is None else raw
        if raw is None:
            continue
        parts = raw.split(",") if f.filter == "many" else [raw]
        try:
            filters[f.name] = tuple(dict.fromkeys(f.parse_query_value(p) for p in parts))
        except ValueError as exc:
            raise InvalidRequest(f"Invalid '{f.dash_name}' filter: {exc}") from None
    return ListQuery(page=page, limit=limit, sort=sort, filters=filters, q=q)


def _parse_sort(decl: Declaration | None, sort: str | None, order: str | None) -> tuple[tuple[str, bool], ...]:
    if order is not None and order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': must be 'asc' or 'desc'")
    if sort is None:
        # The default order is by id: `order` alone says its direction.
        return (("id", True),) if order == "desc" else ()
    fields = decl.sort_fields if decl else {}
    keys: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for term in sort.split(","):
        desc = order == "desc"
        if term[:1] == " ":
            term = "+" + term[1:]  # `sort=+priority` typed in a URL: the query decoding made `+` a space
        if term[:1] in "+-" and term:
            desc = term[0] == "-"
            term = term[1:]
        f = fields.get(term)
        if f is None:
            allowed = ", ".join(sorted({x.dash_name for x in fields.values()})) or "none"
            shown = term if len(term) <= 40 and term.isprintable() else term[:40].encode("unicode_escape").decode()
            raise InvalidRequest(f"Invalid 'sort': unknown field '{shown}' (sortable: {allowed})")
        if f.name not in seen:
            seen.add(f.name)
            keys.append((f.name, desc))
    return tuple(keys)


def pagination_headers(query: ListQuery, count: int) -> dict[str, str]:
    """Return the X-Pagination-* headers for a page."""
    return {
        "X-Pagination-Page": str(query.page),
        "X-Pagination-Limit": str(query.limit),
        "X-Pagination-Count": str(count),
        "X-Pagination-Total": str(total_pages(query.limit, count)),
    }


def total_pages(limit: int, count: int) -> int:
    """Return the number of pages (at least 1: an empty list still has a first page)."""
    return max(1, -(-count // limit))


def link_header(base_url: str, args: Mapping[str, list[str]], query: ListQuery, count: int) -> str:
    """Return the Link header: first, previous + prev, next, last; api_key never kept."""
    kept = [(k, v) for k, values in args.items() if k not in ("page", "api_key") for v in values]
    last = total_pages(query.limit, count)

    def url(page: int) -> str:
        return base_url + "?" + urlencode([*kept, ("page", str(page))])

    links = [f'<{url(1)}>; rel="first"']
    if query.page > 1:
        previous = url(min(query.page - 1, last))
        links.append(f'<{previous}>; rel="previous"')
        links.append(f'<{previous}>; rel="prev"')
    if query.page < last:
        links.append(f'<{url(query.page + 1)}>; rel="next"')
    links.append(f'<{url(last)}>; rel="last"')
    return ", ".join(links)
