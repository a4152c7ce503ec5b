"""medusa_v2: the Medusa API v2 conventions as a reusable Tornado layer and a service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .errors import ApiError
    from .url_table import get_apiv2_handlers


def __getattr__(name: str) -> Any:
    """Import `ApiError` and `get_apiv2_handlers` when first asked for (PEP 562).

    They need Tornado; imported eagerly here, every submodule would pull it in, and
    the declarations and the store are meant to be usable without it.
    """
    if name == "ApiError":
        from .errors import ApiError

        return ApiError
    if name == "get_apiv2_handlers":
        from .url_table import get_apiv2_handlers

        return get_apiv2_handlers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ApiError", "__version__", "get_apiv2_handlers"]
