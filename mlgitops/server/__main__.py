"""``python -m mlgitops.server``: ``--standby`` (see `standby`) or the ``serve`` options."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["--standby"]:
        from mlgitops.server import supervisor

        code = supervisor.standby()
        # Skip interpreter teardown (seconds with scikit-learn loaded): the workers are gone.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    from mlgitops.server.cli import serve

    serve.main(args=sys.argv[1:], prog_name="python -m mlgitops.server")


if __name__ == "__main__":
    main()
