"""The Kubernetes operator: the same model repository and decisions, deployed to a cluster.

- `sync`: desired state from Git (as Flux's source-controller does): one ModelDeployment custom
  resource per ``manifests/<name>.yaml``, stamped with the commit it came from.
- `deploy`: one ModelDeployment -> a Deployment and a Service it owns, pinned to that commit,
  with Ready/Reconciling/Stalled conditions and Kubernetes Events. Uses the same pure plan and
  condition transitions as the local controller (`core.plan`, `core.status`) and the same
  checks of a version (`controller.source.Source`: digest, trust, quarantine, signatures).
- `handlers`: the kopf entry point (``mlgitops operator``), the only module that imports kopf.

May NOT: load a model (pods do, after their init container checked the digest), or write to
Git other than through the revert writer.
"""
