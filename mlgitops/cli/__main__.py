"""``python -m mlgitops.cli`` is the ``mlgitops`` command."""

import sys

from mlgitops.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
