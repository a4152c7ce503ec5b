"""medusa_v2: the Medusa API v2 conventions as a reusable Tornado layer and a service."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ApiError  # noqa: E402
from .routes import get_apiv2_handlers  # noqa: E402

__all__ = ["ApiError", "__version__", "get_apiv2_handlers"]
