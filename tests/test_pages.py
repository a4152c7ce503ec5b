"""store/pages.py: how a page is planned from exact counts (pure: no store)."""

from __future__ import annotations

from medusa_v2.store import pages
from medusa_v2.store.pages import Part


def test_split_keys_are_the_leading_sort_keys_that_are_filter_fields():
    dims = ["state", "priority", "assignee"]
    assert pages.split_keys((("state", False), ("priority", True), ("title", False)), dims) == ["state", "priority"]
    assert pages.split_keys((("title", False), ("state", False)), dims) == []
    assert pages.split_keys((("state", False), ("state", True)), dims) == ["state"]  # a key once
    assert pages.split_keys((), dims) == []


def test_a_page_nearer_the_end_is_read_from_the_end():
    assert pages.whole({}, (), 0, 20, 1000) == [Part({}, (), 0, 20, 1000)]
    assert pages.whole({}, (), 960, 20, 1000) == [Part({}, (), 20, 20, 1000, reverse=True)]
    assert pages.whole({}, (), 990, 20, 1000) == [Part({}, (), 0, 10, 1000, reverse=True)]  # the short last page
    assert pages.whole({}, (), 1000, 20, 1000) == []  # past the end


def test_a_page_over_groups_takes_each_groups_share_in_sort_order():
    sort = (("state", True), ("title", False))
    groups = [(("closed",), 5), (("open",), 3), (("pending",), 0), ((None,), 4)]
    # descending: pending (empty, skipped), open, closed, then NULL last
    parts = pages.split({"priority": (3,)}, sort, 2, 5, ["state"], groups)
    assert parts == [
        Part({"priority": (3,), "state": ("open",)}, (("title", False),), 0, 1, 3, reverse=True),
        Part({"priority": (3,), "state": ("closed",)}, (("title", False),), 0, 4, 5),
    ]
    # ascending: NULL first; a group whose rows the page skips entirely is not read
    up = (("state", False),)
    assert pages.split({}, up, 4, 2, ["state"], groups) == [
        Part({"state": ("closed",)}, (("id", False),), 0, 2, 5),  # the groups keep id in the key's direction
    ]


def test_a_page_spread_over_too_many_groups_is_read_whole():
    groups = [((i,), 1) for i in range(10)]
    assert pages.split({}, (("priority", False),), 0, pages.MOST_PARTS + 1, ["priority"], groups) is None
    assert len(pages.split({}, (("priority", False),), 0, pages.MOST_PARTS, ["priority"], groups) or []) == 4


def test_walk_cost_is_the_entries_read_before_the_page_is_found():
    part = Part({"state": ("open",)}, (), 100, 20, 1000)
    assert pages.walk_cost(part, 10_000) == 1200  # one match in ten entries
    assert pages.walk_cost(Part({}, (), 0, 20, 0), 10_000) == 0.0
