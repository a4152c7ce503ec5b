"""An embedder's own resources, declared with no SQL (see notes.py and shows.py)."""
