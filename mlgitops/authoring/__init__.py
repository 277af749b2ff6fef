"""Authoring and the remote's gate: what makes a commit, and what a commit must satisfy.

- `publishing`: ``mlgitops.publish`` / ``mlgitops publish`` (an estimator and its reference frame
  -> a model directory, baseline, manifest, commit and push).
- `repository`: ``mlgitops init`` (a model repository and its bare remote with hooks), ``require``
  (is this a model repository?), the remote a work tree pushes to.
- `hooks`: the remote's pre-receive check (cold, or through the warm validator of
  `adapters.validator`).
- `validate`: the checks of a model version (manifest, digest, files, trust, quarantine) that
  publish, the hook, ``mlgitops validate``, the controller and ``fetch-model`` share.

May NOT import the controller, the server, the operator, the CLI or the demos. The runtime side
imports only `validate` (controller, ``fetch-model``) and `repository.remote_of` (``mlgitops up``).
"""
