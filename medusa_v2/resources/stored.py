"""A resource kept in the store, described entirely by its declaration.

Ticket and message differ only in their declarations, their parent and one rule
(no message on a closed ticket): the verbs themselves are written once, here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..declaration import Declaration
from ..errors import ApiError
from ..listing import ListQuery, Page
from ..resource import Precondition, Resource, ResourceMethods
from ..store.base import AlreadyExists, NotFound, Parent


class StoredResource(Resource):
    """List, retrieve, create, replace, update and delete rows of `declaration`."""

    declaration: ClassVar[Declaration]
    stored: ClassVar[bool] = True

    async def list(self, query: ListQuery, **ids: Any) -> Page:
        """Return one page of representations and the number of matching items."""
        with self._errors():
            page = await self.store.list_rows(self.declaration, query, self._parent(ids))
        return Page(self.declaration.page_to_json(page), page.count)

    async def retrieve(self, **ids: Any) -> dict[str, Any]:
        """Return one item's representation."""
        with self._errors():
            row = await self.store.get_row(self.declaration, ids[self.id_key()], self._parent(ids))
        return self.declaration.to_json(row)

    async def create(self, values: dict[str, Any], **ids: Any) -> dict[str, Any]:
        """Insert an item (its parent checked by `check_parent`); return it."""
        with self._errors():
            row = await self.store.insert_row(
                self.declaration, values, self.api.clock(), self._parent(ids), self.check_parent
            )
        return self.declaration.to_json(row)

    async def replace(self, values: dict[str, Any], precondition: Precondition | None, **ids: Any) -> dict[str, Any]:
        """Set every writable field (defaults already filled by the declaration)."""
        return await self._write(values, precondition, ids)

    async def update(self, values: dict[str, Any], precondition: Precondition | None, **ids: Any) -> dict[str, Any]:
        """Set the accepted fields only."""
        return await self._write(values, precondition, ids)

    async def delete(self, precondition: Precondition | None, **ids: Any) -> None:
        """Delete the item (and its children)."""
        with self._errors():
            await self.store.delete_row(
                self.declaration, ids[self.id_key()], self.check_for(precondition), self._parent(ids)
            )

    def check_parent(self, parent_row: Mapping[str, Any]) -> None:
        """Refuse a create under this parent row (raise ApiError); override per resource."""

    async def _write(
        self, values: dict[str, Any], precondition: Precondition | None, ids: Mapping[str, int]
    ) -> dict[str, Any]:
        with self._errors():
            row = await self.store.update_row(
                self.declaration,
                ids[self.id_key()],
                values,
                self.api.clock(),
                self.check_for(precondition),
                self._parent(ids),
            )
        return self.declaration.to_json(row)

    def _parent(self, ids: Mapping[str, Any]) -> Parent | None:
        parent = self.declaration.parent
        if self.parent is None or parent is None:
            return None
        return (parent, ids[self.parent.id_key()])

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate the store's NotFound and AlreadyExists into 404 and 409."""
        try:
            yield
        except NotFound as exc:
            raise ApiError(404, f"{self._label(exc.resource)} {exc.id} not found") from None
        except AlreadyExists as exc:
            raise ApiError(409, f"{self._label(exc.resource)} {exc.id} already exists") from None

    def _label(self, name: str) -> str:
        decl: Declaration | None = self.declaration
        while decl is not None:
            if decl.name == name:
                return decl.label
            decl = decl.parent
        return name.capitalize()


if TYPE_CHECKING:
    _implements_every_verb: type[ResourceMethods] = StoredResource  # mypy checks each method against its verb
