"""``mlgitops operator``: the Kubernetes runtime (kopf), configured by flags."""

from __future__ import annotations

from pathlib import Path

import click

from mlgitops import settings
from mlgitops.cli.group import main
from mlgitops.core import layout


@main.command()
@click.option("--repo-url", default="", help="A model repository (any URL git can fetch), "
              "besides the namespace's ModelRepository resources. Default: only those.")
@click.option("--namespace", "-n", required=True, help="Where ModelDeployments and models live.")
@click.option("--branch", default=layout.BRANCH, show_default=True)
@click.option("--interval", type=float, default=10.0, show_default=True,
              help="Seconds between fetches of the repository.")
@click.option("--secret", help="Secret with Git credentials for the pods' init container.")
@click.option("--image", default="mlgitops:0.1.0", show_default=True, help="Model server image.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=Path("/tmp/mlgitops-operator"),
              show_default=True, help="Where the operator keeps its clone of the repository.")
@click.option("--kubeconfig", type=click.Path(path_type=Path), help="Default: in-cluster, then ~/.kube/config.")
@click.option("--http-port", type=int, default=8700, show_default=True,
              help="Port of POST /hooks/github (secret: MLGITOPS_WEBHOOK_SECRET) and /reports/; 0: off.")
@click.option("--http-host", help="Where that port binds. Default: 127.0.0.1 "
              "(MLGITOPS_OPERATOR_HTTP_HOST; the installed operator's pod sets 0.0.0.0).")
@click.option("--public-url", help="Where people reach that port: revert commits link reports there.")
@click.option("--grpc-port", type=int, help="Model pods also serve the v2 gRPC API on this port "
              "(their Service gets a port named grpc). Default: HTTP only.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="One line per record on stderr: text, or JSON (time, level, logger, model, "
              "commit, message) for a cluster's log collector.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True)
def operator(repo_url: str, namespace: str, branch: str, interval: float, secret: str | None,
             image: str, state_dir: Path, kubeconfig: Path | None, http_port: int,
             http_host: str | None, public_url: str | None, grpc_port: int | None,
             log_format: str, log_level: str) -> None:
    """Run the Kubernetes operator (kopf): the repository's models as Deployments in NAMESPACE."""
    import os

    from mlgitops import logs
    from mlgitops.operator import handlers

    logs.setup(log_format, level=log_level)

    os.environ.update({
        "MLGITOPS_OPERATOR_REPO_URL": repo_url, "MLGITOPS_OPERATOR_NAMESPACE": namespace,
        "MLGITOPS_OPERATOR_BRANCH": branch, "MLGITOPS_OPERATOR_INTERVAL_SECONDS": str(interval),
        "MLGITOPS_OPERATOR_SECRET": secret or "", "MLGITOPS_OPERATOR_IMAGE": image,
        "MLGITOPS_OPERATOR_STATE_DIR": str(state_dir),
        "MLGITOPS_OPERATOR_KUBECONFIG": str(kubeconfig or ""),
        "MLGITOPS_OPERATOR_HTTP_PORT": str(http_port),
        **({"MLGITOPS_OPERATOR_HTTP_HOST": http_host} if http_host else {}),
        "MLGITOPS_OPERATOR_PUBLIC_URL": public_url or "",
        "MLGITOPS_OPERATOR_GRPC_PORT": "" if grpc_port is None else str(grpc_port),
    })
    if kubeconfig is not None:  # kopf logs in with $KUBECONFIG; the adapter reads the setting
        os.environ["KUBECONFIG"] = str(kubeconfig)
    settings.operator()  # a sentence now rather than a traceback inside kopf
    handlers.run(namespace)
