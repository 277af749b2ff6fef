"""Inference server processes on this machine (the embedded runtime).

Importing scikit-learn takes seconds, so the runtime keeps warm *standby* processes
(``python -m mlgitops.server --standby``, imports done) and hands one a model to serve:
a new version answers in well under a second after the controller asks for it.
Processes run in their own session so Ctrl-C reaches only the controller, which stops them
in order; a controller killed with SIGKILL leaves them serving for its successor to adopt.

Every process is written to the ledger ``<state>/servers.json`` (atomically) *before* it is
started, under a random token that the process also carries in its environment
(``MLGITOPS_SERVER=<token>``), and again with its pid and start time once it runs. After a
crash, `LocalRuntime.recover` adopts the recorded servers that still serve and stops every
other process of the ledger (standbys, servers that were launching or draining), matched on
pid *and* start time, or on the token in the environment: a pid the kernel reused for someone
else's process is never signalled.

Modules: `processes` (process identity and signals), `ledger` (the ledger, `Backend`, what a
recovery found), `spawn` and `standby` (starting processes; the warm standby pool),
`host_pool` (shared hosts; who goes where is `adapters.local_hosts`), `runtime`
(`LocalRuntime`: place, launch, stop, adopt), `stats_files` (`StatsFiles`).
"""

from mlgitops.adapters.local_runtime.ledger import LEDGER, Backend, Ledger, Leftover, Recovery
from mlgitops.adapters.local_runtime.processes import (
    OWNER_ENV,
    TOKEN_ENV,
    flock_holders,
    is_process,
    owned_pids,
    pid_alive,
    server_tokens,
    start_time,
)
from mlgitops.adapters.local_runtime.runtime import LocalRuntime
from mlgitops.adapters.local_runtime.stats_files import StatsFiles

__all__ = [
    "LEDGER",
    "OWNER_ENV",
    "TOKEN_ENV",
    "Backend",
    "Ledger",
    "Leftover",
    "LocalRuntime",
    "Recovery",
    "StatsFiles",
    "flock_holders",
    "is_process",
    "owned_pids",
    "pid_alive",
    "server_tokens",
    "start_time",
]
