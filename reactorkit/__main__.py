"""``python -m reactorkit``: the same as the ``reactorkit`` command."""

from reactorkit.cli import main

raise SystemExit(main())
