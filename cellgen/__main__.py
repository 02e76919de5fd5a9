"""`python -m cellgen …`: the `cellgen` command without its console script (e.g. uninstalled)."""
from cellgen.cli import main

raise SystemExit(main())
