"""The suite uses the project's own pytest plugin (medusa_v2.testing), as embedders do.

The plugin is registered through the `pytest11` entry point when medusa_v2 is
installed; the constants are re-exported for the test modules that import them.
"""

from __future__ import annotations

from medusa_v2.testing import API_KEY, PASSWORD, SECRET, USERNAME, Client, FakeClock, Response

__all__ = ["API_KEY", "PASSWORD", "SECRET", "USERNAME", "Client", "FakeClock", "Response"]
