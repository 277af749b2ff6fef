"""The demos and their example data.

- `embedded`: ``mlgitops demo`` (a model repository, the controller and servers on this machine,
  drift, the automatic revert), plus the small helpers benches and notebooks share
  (``free_port``, ``wait_for_version``, ``Traffic``).
- `k8s`: ``mlgitops demo --kubernetes`` (the same story against a throw-away API server).
- `shadow`, `labels`: ``mlgitops demo --shadow`` (a bad version judged on copies of live
  traffic) and ``--labels`` (a version the drift checks pass, reverted on its late labels).
- `examples`: the synthetic credit data both use.

Top of the stack: only the CLI imports it; nothing in mlgitops may import a demo.
"""
