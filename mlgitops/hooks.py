"""The hook entry point of remotes set up before the authoring package: ``python -m mlgitops.hooks``.

Hook scripts installed by older versions run this module by name; it runs
`mlgitops.authoring.hooks`, so those remotes keep validating pushes without a reinstall.
"""

from __future__ import annotations

import sys

from mlgitops.authoring.hooks import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
