"""`python -m medusa_v2` runs the command line."""

from .cli import main

raise SystemExit(main())
