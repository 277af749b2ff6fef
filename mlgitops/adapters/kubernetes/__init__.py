"""Kubernetes: the API client (`api`) and the Kubernetes runtime behind the controller's ports.

- `api`: `Cluster`, one API connection (plain dicts in and out, errors translated).
- `workloads`: `KubernetesWorkloads` (``ports.Workloads``): a Deployment per version
  (`versions`) and a Service per model, owned by its ModelDeployment; a rollout in progress is
  `errors.Waiting`; a replaced version stays warm until the reconciler retires it.
- `workload_calls`: the Deployment, Service and pod calls of `api.Cluster`.
- `pod_stats`: `PodStats` (``ports.LiveStatsSource``): every ready pod's stats route.
- `resource_status`: `ResourceStatus` (``ports.StatusMirror``) and `ResourceEvents`: the
  ModelDeployments' status and Kubernetes Events.

The only importer of ``kubernetes`` (with the operator package).
"""

from mlgitops.adapters.kubernetes.api import (
    APPLY,
    FIELD_MANAGER,
    MAX_EVENT_MESSAGE,
    MERGE,
    MODEL_DEPLOYMENT,
    MODEL_REPOSITORY,
    Cluster,
    Kind,
    translate,
)

__all__ = ["APPLY", "FIELD_MANAGER", "MAX_EVENT_MESSAGE", "MERGE", "MODEL_DEPLOYMENT",
           "MODEL_REPOSITORY", "Cluster", "Kind", "translate"]
