"""``python -m engine``: the command-line interface."""
from engine.cli import main

raise SystemExit(main())
