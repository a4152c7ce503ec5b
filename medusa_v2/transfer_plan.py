"""What a transfer moves: the tree of mounted stored resources, and each item's children.

`plan_for` checks that the resources can be written as lines (see transfer.py) and
returns a node per top-level resource; a node attaches an exported item's children
to it and parses an imported item with everything under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .casing import to_camel
from .declaration import Declaration
from .store.base import Item, Tree, scoped_ids
from .transfer_item import FastShape, TransferError, parse_item

if TYPE_CHECKING:
    from .resource import Resource

MARKER = "resource"  # the key naming a line's top-level resource
DEFAULT_RESOURCE = "ticket"  # the resource of a line without MARKER (every line of the original format)


def collection_key(decl: Declaration) -> str:
    """Return the key of a child resource's array inside its parent's item (`message` -> `messages`)."""
    return to_camel(decl.name) + "s"


_NONE_LIST: list[Any] = []  # a child array absent from its parent item: read as empty (never changed)


class TransferNode:
    """One stored resource of a transfer: its tree, its key in its parent's item, its parsers."""

    def __init__(self, tree: Tree, children: Sequence[TransferNode]) -> None:
        self.tree = tree
        self.decl: Declaration = tree.decl
        self.name = self.decl.name
        self.key = collection_key(self.decl)
        self.children = tuple(children)
        self.leaf = not self.children
        self.keys = tuple(child.key for child in self.children)
        self.no_kids: tuple[Sequence[Item], ...] = tuple(() for _ in self.children)  # shared: never changed
        try:
            self.shape = FastShape(self.decl)
        except ValueError as exc:
            raise TransferError(str(exc)) from None

    def walk(self) -> Iterable[TransferNode]:
        """Yield this node, then every node below it."""
        yield self
        for child in self.children:
            yield from child.walk()

    # -- export --

    def attach(self, doc: dict[str, Any], kids: Sequence[Sequence[Item]], counts: dict[str, int]) -> dict[str, Any]:
        """Put the items under `doc` into it, one array per child resource; count them."""
        for child, items in zip(self.children, kids, strict=True):
            if not items:
                doc[child.key] = []
                continue
            counts[child.name] += len(items)
            if child.leaf:
                doc[child.key] = [item for item, _ in items]
            else:
                doc[child.key] = [child.attach(item, below, counts) for item, below in items]  # type: ignore[arg-type]
        return doc

    # -- import --

    def parse(self, doc: Any, plain: bool, parent_id: Any = None, prefix: str = "") -> Item:
        """Validate one item and those under it; return it as (row, kids) for the store.

        Every line goes through here: an item with no child items (most of them)
        returns after one check per child resource.
        """
        arrays: list[Any] = []
        some = False
        if self.keys and type(doc) is dict:
            pop = doc.pop
            for key in self.keys:
                items = pop(key, _NONE_LIST)
                if type(items) is not list:
                    raise TransferError(f"{prefix}{key}: must be an array")
                if items:
                    some = True
                arrays.append(items)
        row = (self.shape.row(doc, parent_id) if plain and type(doc) is dict else None) or parse_item(
            self.decl, doc, parent_id, prefix
        )
        if not some:
            return row, self.no_kids
        own_id = row["id"]
        kids: list[list[Item]] = []
        for child, items in zip(self.children, arrays, strict=True):
            if not items:
                kids.append([])
            elif child.leaf:
                shape, decl, key = child.shape, child.decl, child.key
                out: list[Item] = []
                for i, item in enumerate(items):
                    fast = shape.row(item, own_id) if plain and type(item) is dict else None
                    out.append((fast or parse_item(decl, item, own_id, f"{prefix}{key}[{i}]."), ()))
                kids.append(out)
            else:
                kids.append(
                    [child.parse(item, plain, own_id, f"{prefix}{child.key}[{i}].") for i, item in enumerate(items)]
                )
        return row, tuple(kids)

    def count(self, items: Sequence[Item], counts: dict[str, int]) -> None:
        """Add the items and everything under them to `counts`, per resource."""
        counts[self.name] += len(items)
        for at, child in enumerate(self.children):
            if child.leaf:
                counts[child.name] += sum(len(kids[at]) for _, kids in items)
            else:
                child.count([item for _, kids in items for item in kids[at]], counts)

    def holds(self, item: Item, resource: str, id: Any, parent_id: Any) -> bool:
        """Return whether `item`, or an item under it, is the row `id` of `resource` (under `parent_id`)."""
        row, kids = item
        if self.name == resource and row["id"] == id:
            if parent_id is None or row.get(self.decl.parent_field or "") == parent_id:
                return True
        return any(
            child.holds(below, resource, id, parent_id)
            for child, items in zip(self.children, kids, strict=False)
            for below in items
        )


def plan_for(resources: Iterable[type[Resource]] | None) -> list[TransferNode]:
    """Return the top-level nodes of the stored resources among `resources`: ticket first, then as mounted.

    None: the built-in resources (ticket and message). Raises TransferError for a
    set of resources that cannot be written as lines (see the module's docstring).
    """
    if resources is None:
        from .url_table import builtin_resources

        resources = builtin_resources().values()
    decls: list[Declaration] = [cls.declaration for cls in resources if cls.declaration is not None]
    names = [decl.name for decl in decls]
    for decl in decls:
        if names.count(decl.name) > 1:
            raise TransferError(f"resource {decl.name!r} is mounted twice")
        if decl.parent is not None and decl.parent.name not in names:
            raise TransferError(f"resource {decl.name!r} needs its parent {decl.parent.name!r} mounted too")

    def node(decl: Declaration) -> TransferNode:
        below = [d for d in decls if d.parent is not None and d.parent.name == decl.name]
        if below and scoped_ids(decl):
            raise TransferError(
                f"resource {decl.name!r}: its ids are unique only under its parent, so the rows nested under "
                f"it ({', '.join(d.name for d in below)}) cannot be told apart"
            )
        children = [node(d) for d in below]
        taken = {f.json_name for f in decl.fields}
        for child in children:
            if child.key in taken:
                raise TransferError(
                    f"resource {decl.name!r}: the array of {child.name!r} ({child.key!r}) would be named"
                    " like a field or another array"
                )
            taken.add(child.key)
        return TransferNode(Tree(decl, tuple(child.tree for child in children)), children)

    tops = sorted((d for d in decls if d.parent is None), key=lambda d: d.name != DEFAULT_RESOURCE)
    plan = [node(d) for d in tops]
    for top in plan:
        if MARKER in top.decl.by_json:
            raise TransferError(f"resource {top.name!r}: its field {MARKER!r} would be read as the line's resource")
    return plan


def zero_counts(plan: Sequence[TransferNode]) -> dict[str, int]:
    return {node.name: 0 for top in plan for node in top.walk()}
