"""Random list queries drawn from a resource's declaration: any filters, sort and page.

The scaling pass of bench/run.py times these at its largest size, beside its fixed
queries, so that the figure covers what users may ask, not what the indexes were
shaped for. Everything comes from the declaration (filters, their kind, sortable
fields, searchable ones); values come from its bounds or choices, or else from the
stored rows themselves (a sample read through the API), so an embedder's resource
is drawn the same way.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

Get = Callable[[str], tuple[int, Any, bytes]]  # path -> (status, headers, body)


def filter_values(decl: Any, get: Get, path: str, rng: random.Random) -> dict[str, list[Any]]:
    """Return the values to draw per filter field: its choices, a small int range, or values seen in the rows."""
    values: dict[str, list[Any]] = {}
    seen: list[dict[str, Any]] = []
    for f in decl.fields:
        if not f.filter:
            continue
        if f.choices is not None:
            values[f.name] = list(f.choices)
        elif f.type is int and f.min is not None and f.max is not None and f.max - f.min <= 100:
            values[f.name] = list(range(f.min, f.max + 1))
        else:
            if not seen:
                status, headers, body = get(f"{path}?limit=1000")
                pages = int(headers.get("X-Pagination-Total") or 1)
                status, _, body = get(f"{path}?limit=1000&page={rng.randint(1, pages)}")
                seen = json.loads(body) if status == 200 else []
            found = sorted({item.get(f.json_name) for item in seen} - {None}, key=str)
            if found:
                values[f.name] = found
    return values


def draw(decl: Any, values: dict[str, list[Any]], rng: random.Random, q: str | None = None) -> dict[str, str]:
    """Return the query parameters of one random list request (page left out: it needs the count)."""
    params: dict[str, str] = {}
    for f in decl.fields:
        if f.name in values and rng.random() < 0.5:
            many = rng.randint(1, min(2, len(values[f.name]))) if f.filter == "many" else 1
            params[f.dash_name] = ",".join(str(v) for v in rng.sample(values[f.name], many))
    sortable = [f for f in decl.fields if f.sortable]
    keys = rng.sample(sortable, min(len(sortable), rng.choice([0, 1, 1, 2])))
    if keys:
        params["sort"] = ",".join(("-" if rng.random() < 0.5 else "") + f.dash_name for f in keys)
    if q is not None:
        params["q"] = q
    return params


def run(
    decl: Any, get: Get, time_path: Callable[[str], float], path: str, count: int, rng: random.Random, q: str | None
) -> list[tuple[float, str, int]]:
    """Time `count` random requests: (p50 ms, path with query, matching rows), slowest last."""
    values = filter_values(decl, get, path, rng)
    out = []
    for _ in range(count):
        params = draw(decl, values, rng, q)
        status, headers, body = get(f"{path}?{urlencode(params, safe=',')}")
        if status != 200:
            raise SystemExit(f"bench: GET {path}?{urlencode(params, safe=',')} answered {status}: {body[:200]!r}")
        matched = int(headers.get("X-Pagination-Count") or 0)
        pages = max(1, int(headers.get("X-Pagination-Total") or 1))
        params["page"] = str(rng.choice([1, rng.randint(1, pages), pages]))
        full = f"{path}?{urlencode(params, safe=',')}"
        out.append((time_path(full), full, matched))
    out.sort(key=lambda row: row[0])
    return out


def summary(rows: Sequence[tuple[float, str, int]], limit: float) -> dict[str, Any]:
    """Return the median and worst p50, how many met `limit` ms, and the slowest queries."""
    p50s = [row[0] for row in rows]
    return {
        "n": len(rows),
        "median": statistics.median(p50s),
        "worst": p50s[-1],
        "met": sum(1 for p in p50s if p <= limit),
        "limit": limit,
        "slowest": list(rows[-3:]),
    }
