"""The notebook API: what a data scientist calls from Python besides ``mlgitops.publish``.

- `drift`: ``mlgitops.drift.compare(reference_frame, current_frame)`` and its helpers (pandas
  frames adapted to the pure `core.drift`); ``mlgitops.drift`` re-exports it.
- `insights`: the decision history of a model repository as frames (``mlgitops history``).

May NOT import the controller, the server, the operator, the CLI, mlflow or evidently; it reads
what the controller recorded, it never acts.
"""
