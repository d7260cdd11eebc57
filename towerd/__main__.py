"""Allow ``python -m towerd``."""

from towerd.cli import main

raise SystemExit(main())
