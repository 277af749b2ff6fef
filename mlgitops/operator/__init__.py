"""The Kubernetes operator: kopf handlers and wiring, nothing of its own to decide.

- `runtime`: one model repository wired as ``mlgitops up`` wires it — the controller's own
  `Reconciler`, `Loop` and drift `Monitor` — with the Kubernetes runtime behind the ports
  (`adapters.kubernetes`: `KubernetesWorkloads`, `PodStats`, `ResourceStatus`).
- `handlers`: the kopf entry point (``mlgitops operator``), the only module that imports kopf:
  a runtime per ``ModelRepository`` resource (and one for ``--repo-url``), the repository's
  status, the finalizer that deletes its models, the retry annotation, the webhook port.

May NOT: decide (plan, hold, retry, revert are the controller's), load a model (pods do, after
their init container checked the digest), or write to Git other than through the revert writer.
"""
