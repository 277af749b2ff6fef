"""``mlgitops demo``: the whole loop end to end, embedded or on Kubernetes."""

from __future__ import annotations

from pathlib import Path

import click

from mlgitops import ui
from mlgitops.cli.group import main


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), help="Where to create the demo repo.")
@click.option("--port", type=int, default=0, help="Gateway port (0 = pick a free one).")
@click.option("--kubernetes", "on_kubernetes", is_flag=True,
              help="The same story on a local Kubernetes API server, deployed by the operator "
                   "(needs the binaries of tools/k8s/build.sh, or Go to build them).")
@click.option("--real-node", is_flag=True,
              help="With --kubernetes: on real pods from the mlgitops image (a kubelet, containerd "
                   "and runc on this machine; needs root and `make realnode-deps`).")
@click.option("--shadow", is_flag=True,
              help="A bad version under a shadow rollout: judged on copies of live traffic "
                   "and reverted in Git before any user request reaches it (with "
                   "--kubernetes: by the operator, on the local test cluster).")
@click.option("--labels", is_flag=True,
              help="A version the drift checks pass but that is wrong more often: its labels "
                   "come back late and the monitor reverts it in Git for what it gets wrong.")
def demo(workdir: Path | None, port: int, on_kubernetes: bool, real_node: bool,
         shadow: bool, labels: bool) -> None:
    """The whole loop on this machine, end to end, with timings."""
    if shadow and real_node:
        raise click.UsageError("--shadow runs on the embedded runtime or on the kubelet "
                               "stand-in (--kubernetes); drop --real-node")
    if labels and (on_kubernetes or shadow):
        raise click.UsageError("--labels runs alone on the embedded runtime: drop --kubernetes "
                               "and --shadow")
    if labels:
        with ui.console.status("mlgitops demo: loading scikit-learn, MLflow and Evidently…"):
            from mlgitops.demo import labels as demo_labels

        demo_labels.run(workdir=workdir, port=port)
        return
    if shadow and on_kubernetes:
        from mlgitops.demo import k8s_shadow

        k8s_shadow.run(workdir=workdir)
        return
    if shadow:
        from mlgitops.demo import shadow as demo_shadow

        demo_shadow.run(workdir=workdir, port=port)
        return
    if real_node and not on_kubernetes:
        raise click.UsageError("--real-node goes with --kubernetes: mlgitops demo --kubernetes --real-node")
    if on_kubernetes:
        from mlgitops.demo import k8s as demo_k8s

        demo_k8s.run(workdir=workdir, real_node=real_node)
        return
    with ui.console.status("mlgitops demo: loading scikit-learn, MLflow and Evidently…"):
        from mlgitops.controller import run as _run  # noqa: F401  (imported here, with a spinner)
        from mlgitops.demo import embedded as demo_mod

    demo_mod.run(workdir=workdir, port=port)
