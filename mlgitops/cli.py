"""The ``mlgitops`` command: wires settings and adapters into publish, controller and server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mlgitops import errors, repository, settings, ui, validate
from mlgitops.adapters import git
from mlgitops.core import decisions, layout, manifest
from mlgitops.core import digest as digest_mod

#: Exit codes (README, "Exit codes"): 0 done, 1 failed (a sentence says why), 2 usage.
EXIT_FAILED = 1


def _fail(message: object) -> None:
    ui.console.print(f"[red]error:[/] {message}", soft_wrap=True)
    raise SystemExit(EXIT_FAILED)


class _Group(click.Group):
    """Every error a user can cause ends as one sentence and exit 1; ``--debug`` shows the
    traceback instead. Click's own usage errors exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except errors.MlgitopsError as exc:
            if ctx.params.get("debug"):
                raise
            _fail(exc)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            _fail(f"{type(exc).__name__}: {exc} (unexpected; run the command again with "
                  "`mlgitops --debug ...` for the traceback, and report it)")


@click.group(cls=_Group)
@click.version_option(package_name="mlgitops")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of a sentence.")
def main(debug: bool) -> None:
    """GitOps for machine-learning models: Git says which model version serves.

    Exit codes: 0 done, 1 failed (a sentence on stderr says why), 2 usage error.
    """
    del debug  # read by _Group.invoke
    settings.telemetry_off()


def _model_repo(path: Path) -> Path:
    """``path`` as a model repository, or exit 1 with the sentence saying what it is instead."""
    return repository.require(path)


#: ``--repo`` of every command that reads a model repository (checked by _model_repo).
repo_option = click.option("--repo", default=".", type=click.Path(path_type=Path),
                           show_default=True, help="The model repository (its working clone).")
wide_option = click.option("--wide", is_flag=True,
                           help="One row per line at full width (URLs and messages in the table).")


def _print_table(table: Table, *, wide: bool) -> None:
    """A table on stdout: at the terminal's width, or at its natural width under --wide."""
    if wide:
        from rich.console import Console

        Console(file=ui.out.file, width=100_000, highlight=False,
                color_system="auto" if ui.out.color_system else None).print(table)
    else:
        ui.out.print(table)


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--remote", help="Git remote URL or bare repo path (default: DIRECTORY.git beside it).")
def init(directory: Path, remote: str | None) -> None:
    """Create a model repository wired to a bare remote with validating hooks."""
    where = repository.init(directory, remote=remote)
    click.echo(f"Initialized model repository {directory.resolve()} (remote {where}).")
    click.echo(f"Next: mlgitops publish NAME --model MLFLOW_MODEL --reference DATA --repo {directory}")


def _read_frame(path: Path) -> Any:
    import pandas as pd

    if path.suffix not in (".parquet", ".csv", ".txt"):
        raise errors.ConfigError(f"{path}: reference data must be .csv or .parquet")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise errors.ConfigError(f"{path} could not be read as {path.suffix[1:]} ({exc}); "
                                 "pass the reference data as .csv or .parquet") from exc


@main.command()
@click.argument("name")
@click.option("--model", "model_source", required=True,
              help="MLflow model directory, or a runs:/ or models:/ URI.")
@click.option("--reference", required=True, type=click.Path(exists=True, path_type=Path),
              help="Reference data (.csv or .parquet) the model was trained or validated on.")
@repo_option
@click.option("--target", help="Label column in the reference data (kept out of the features); "
              "a column the model was not fitted on must be named here.")
@click.option("--message", "-m", help="Commit message.")
@click.option("--trust", multiple=True, help="A type the model needs (optional: the repository's "
              "trust policy decides; `mlgitops trust allow` admits more).")
@click.option("--no-push", is_flag=True, help="Commit only.")
def publish(name: str, model_source: str, reference: Path, repo: Path, target: str | None,
            message: str | None, trust: tuple[str, ...], no_push: bool) -> None:
    """Publish an MLflow model as the next version of NAME (commit + push)."""
    from mlgitops import publishing as publish_mod
    from mlgitops.adapters import mlflow_models

    repo = _model_repo(repo)
    estimator = mlflow_models.load_estimator_for_publish(
        model_source, trusted_types=trust, policy=settings.trust_policy(repo=repo))
    sha = publish_mod.publish(estimator, _read_frame(reference), name=name, repo=repo,
                              target=target, message=message, push=not no_push,
                              trusted_types=trust)
    click.echo(sha)


@main.command(name="validate")
@click.argument("directory", default=".", type=click.Path(path_type=Path))
@click.option("--no-load", is_flag=True, help="Skip loading the models (faster).")
def validate_cmd(directory: Path, no_load: bool) -> None:
    """Check manifests, digests, signatures, baselines and trusted types."""
    root = _model_repo(directory)
    result = validate.validate_tree(root, load=not no_load, policy=settings.trust_policy(repo=root))
    if git.is_repo(root):
        for warning in repository.protection_problems(root):
            ui.console.print(f"[yellow]![/] {warning}")
    for p in result.problems:
        ui.console.print(f"[red]✗[/] {p}")
    if not result.ok:
        ui.console.print(f"{len(result.problems)} problem(s); nothing is deployable until fixed.")
        raise SystemExit(1)
    names = ", ".join(d.name for d in result.deployments) or "no models yet"
    ui.console.print(f"[green]✓[/] valid: {names}")


@main.command()
def crd() -> None:
    """Print the ModelDeployment CustomResourceDefinition (generated from the schema)."""
    click.echo(repository.crd_yaml(), nl=False)


@main.command(name="fetch-model")
@click.option("--repo-url", required=True, help="Git URL of the model repository.")
@click.option("--commit", required=True, help="The full commit id to fetch.")
@click.option("--name", required=True, help="Model name (models/NAME, manifests/NAME.yaml).")
@click.option("--digest", required=True, help="The content digest the pod pins (sha256:…).")
@click.option("--dest", required=True, type=click.Path(path_type=Path),
              help="Directory to write the model to (replaced whole, atomically).")
@click.option("--credentials", type=click.Path(path_type=Path),
              help="Directory with username+password or ssh-privatekey+known_hosts.")
def fetch_model_cmd(repo_url: str, commit: str, name: str, digest: str, dest: Path,
                    credentials: Path | None) -> None:
    """Fetch models/NAME at exactly COMMIT, check it, write it to DEST (a pod's init container)."""
    from mlgitops import fetch

    where = fetch.fetch_model(repo_url=repo_url, commit=commit, name=name, digest=digest,
                              dest=dest, credentials=credentials, policy=settings.trust_policy())
    click.echo(f"{layout.model_path(name)} at {commit[:12]} ({digest_mod.short(digest)}) -> {where}")


@main.command()
@repo_option
@click.option("--port", type=int, help="Gateway port (default 8700 or MLGITOPS_PORT).")
@click.option("--host", help="Gateway address (default 127.0.0.1).")
@click.option("--grpc-port", type=int, help="Also serve the v2 gRPC API of every model on this "
              "port (0: a free one; default off, or MLGITOPS_GRPC_PORT).")
@click.option("--poll", "poll_seconds", type=float, help="Poll interval in seconds (default 10).")
@click.option("--no-monitor", is_flag=True, help="Do not watch drift.")
@click.option("--tracking-uri", help="MLflow tracking URI for decisions, versions and the "
              "production alias (default sqlite:///<repo>/.git/mlgitops/mlflow.db; MLGITOPS_TRACKING_URI).")
@click.option("--public-url", help="Where people reach the gateway (e.g. behind an ingress): "
              "revert commits and notifications link decision pages there (MLGITOPS_PUBLIC_URL).")
@click.option("--notify-url", help="POST every deploy, hold, alert and revert to this webhook; "
              "signed with MLGITOPS_NOTIFY_SECRET (MLGITOPS_NOTIFY_URL).")
@click.option("--notify-format", type=click.Choice(["json", "slack"]),
              help="Webhook body: json (default) or slack ({text, blocks}).")
def up(repo: Path, port: int | None, host: str | None, grpc_port: int | None,
       poll_seconds: float | None, no_monitor: bool, tracking_uri: str | None,
       public_url: str | None, notify_url: str | None, notify_format: str | None) -> None:
    """Run the controller, the model servers and the drift monitor (foreground)."""
    from mlgitops.controller import run

    cfg = settings.controller(repo, port=port, host=host, grpc_port=grpc_port,
                              poll_seconds=poll_seconds,
                              monitor=not no_monitor, tracking_uri=tracking_uri,
                              public=public_url, notify_url=notify_url,
                              notify_format=notify_format)
    cfg = dataclasses.replace(cfg, repo=_model_repo(repo))  # after the settings: a wrong flag first
    run.up(cfg)


@main.command()
@click.option("--repo-url", required=True, help="The model repository (any URL git can fetch).")
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
def operator(repo_url: str, namespace: str, branch: str, interval: float, secret: str | None,
             image: str, state_dir: Path, kubeconfig: Path | None, http_port: int,
             http_host: str | None, public_url: str | None, grpc_port: int | None) -> None:
    """Run the Kubernetes operator (kopf): the repository's models as Deployments in NAMESPACE."""
    import os

    from mlgitops.operator import handlers

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


def _status_doc(repo: Path) -> dict[str, Any]:
    from mlgitops.controller import run, state

    root = repo.resolve()
    store = state.Store(settings.state_dir(root))
    ctl = run.read_controller(root) or {}
    alive = run.controller_alive(root, ctl)
    return {
        "repo": str(root),
        "controller": {"running": alive, "url": ctl.get("url"), "pid": ctl.get("pid"),
                       "port": ctl.get("port")},
        "head": store.head,
        "models": [s.to_dict() for _, s in sorted(store.models.items())],
    }


def _short(commit: object) -> str:
    return str(commit)[:12] if commit else "-"


@main.command()
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (stable shape).")
@wide_option
def status(repo: Path, as_json: bool, wide: bool) -> None:
    """Per model: desired and served commit, health, conditions, endpoint."""
    doc = _status_doc(_model_repo(repo))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    ctl = doc["controller"]
    if ctl["running"]:
        where = f"running at {ctl['url']} (pid {ctl['pid']})"
    elif ctl["pid"] is not None:
        where = (f"not running (the controller recorded at {ctl['url']}, pid {ctl['pid']}, is "
                 f"gone; start it with `mlgitops up --repo {doc['repo']}`)")
    else:
        where = f"not running (start it with `mlgitops up --repo {doc['repo']}`)"
    head = _short(doc["head"]) if doc["head"] else "not read yet"
    ui.out.print(f"controller: {where}; Git head {head}", highlight=False)
    if not doc["models"]:
        ui.out.print("No model has been seen by a controller yet (publish one, then run "
                     f"`mlgitops up --repo {doc['repo']}`).")
        return
    table = Table("model", "health", "desired", "served", "conditions")
    if wide:
        table.add_column("last applied")
        table.add_column("last attempted")
        table.add_column("endpoint")
    for column in table.columns[:4]:
        column.no_wrap = True
    notes: list[str] = []
    for m in doc["models"]:
        true = [c for c in m["conditions"] if c["status"] == "True"]
        conds = ", ".join(f"{c['type']} {c['reason']}".strip() for c in true) or "-"
        cells = [m["name"], m["health"], _short(m["desiredCommit"]), _short(m["servedCommit"]),
                 conds]
        if wide:
            cells += [_short(m["lastAppliedCommit"]), _short(m["lastAttemptedCommit"]),
                      m["endpoint"] or "-"]
        table.add_row(*cells)
        if not wide and m["endpoint"]:
            notes.append(f"{m['name']}: {m['endpoint']}")
        notes.extend(f"{m['name']}: {c['type']}: {c['message']}" for c in true
                     if c["type"] == "Stalled" and c["message"])
    _print_table(table, wide=wide)
    for line in notes:
        ui.out.print(line, soft_wrap=True, highlight=False)


#: Controller events that are not decisions: one per closed drift window (``--windows``).
WINDOW_EVENTS = frozenset({"DriftWindow"})


@main.command()
@click.argument("name")
@repo_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--windows", is_flag=True, help="Also list every closed drift window.")
@wide_option
def history(name: str, repo: Path, as_json: bool, windows: bool, wide: bool) -> None:
    """Versions published, deploys, holds, alerts and rollbacks of model NAME."""
    from mlgitops.controller import state

    root = _model_repo(repo)
    if not manifest.valid_name(name):
        raise errors.ConfigError(f"{name!r} is not a model name (a lowercase DNS label such as "
                                 "credit-risk)")
    with __import__("contextlib").suppress(errors.GitError):
        git.fetch(root)
    ref = f"origin/{layout.BRANCH}" if git.rev_parse(root, f"origin/{layout.BRANCH}") else "HEAD"
    rows: list[dict[str, Any]] = []
    for e in git.log(root, ref, layout.model_paths(name)):
        kind = "reverted" if layout.TRAILER_REVERTS in e.trailers else "published"
        rows.append({
            "time": dt.datetime.fromtimestamp(e.timestamp, dt.UTC).isoformat(timespec="seconds"),
            "kind": kind, "commit": e.commit, "digest": e.trailers.get(layout.TRAILER_DIGEST),
            "message": e.subject, "source": "git",
        })
    hidden = 0
    for ev in state.Store(settings.state_dir(root)).events(name):
        if ev["type"] in WINDOW_EVENTS and not windows:
            hidden += 1
            continue
        rows.append({"time": ev["time"], "kind": ev["type"], "commit": ev.get("commit"),
                     "digest": ev.get("digest"), "message": ev.get("message", ""),
                     "source": "controller"})
    if not rows and not hidden:
        known = sorted(p.stem for p in (root / layout.MANIFESTS).glob("*.yaml"))
        raise errors.ConfigError(
            f"{root} has no model {name} (no commit touched {layout.model_path(name)}); "
            + (f"its models: {', '.join(known)}" if known else "it has no model yet"))
    rows.sort(key=lambda r: str(r["time"]))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("time (UTC)", "what", "commit", "message")
    if wide:
        table.add_column("digest")
    for column in table.columns[:3]:
        column.no_wrap = True
    for r in rows:
        cells = [str(r["time"])[:19].replace("T", " "), r["kind"], _short(r["commit"]),
                 str(r["message"])]
        if wide:
            cells.append(digest_mod.short(r["digest"]) if r["digest"] else "-")
        table.add_row(*cells)
    _print_table(table, wide=wide)
    if hidden:
        ui.out.print(f"({hidden} closed drift window(s) not shown; --windows lists them)")


@main.command()
@click.argument("name")
@repo_option
@click.option("--open", "open_latest", is_flag=True, help="Open the latest decision in a browser.")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@click.option("--build", is_flag=True,
              help="Instead: write an Evidently report of NAME's live data now.")
@wide_option
def report(name: str, repo: Path, open_latest: bool, as_json: bool, build: bool,
           wide: bool) -> None:
    """List NAME's decisions (deploys, holds, alerts, reverts) with the URLs of their pages."""
    from mlgitops.controller import reports

    repo = _model_repo(repo)
    if not build:
        _decisions(name, repo, open_latest=open_latest, as_json=as_json, wide=wide)
        return
    with ui.console.status(f"building the Evidently report for {name}…"):
        html = reports.build_report(repo, name)
    ui.console.print(f"Report: {html}")
    ui.console.print(f"Open it in a browser, or run: evidently ui --workspace "
                     f"{reports.workspace_dir(settings.state_dir(repo))}")


@main.command()
@click.argument("name")
@repo_option
def retry(name: str, repo: Path) -> None:
    """Try NAME's held version again now (after fixing what held it)."""
    from mlgitops.controller import run, state

    root = _model_repo(repo)
    store = state.Store(settings.state_dir(root))
    if not manifest.valid_name(name) or (
            name not in store.models and not (root / layout.manifest_path(name)).is_file()):
        raise click.ClickException(f"{root} has no model named {name!r} (no "
                                   f"{layout.manifest_path(name)} and no status of it); check "
                                   "the name with `mlgitops status`")
    store.request_retry(name)
    info = run.read_controller(root)
    if info and run.controller_alive(root, info):
        ui.console.print(f"asked the controller (pid {info['pid']}) to try {name} again; "
                         f"`mlgitops status --repo {repo}` shows the outcome", highlight=False)
    else:
        ui.console.print(f"no controller runs for {root}; `mlgitops up --repo {repo}` tries "
                         f"{name} again when it starts", highlight=False)


def _decisions(name: str, repo: Path, *, open_latest: bool, as_json: bool, wide: bool) -> None:
    """``mlgitops report NAME``: the recorded decisions of NAME, newest last."""
    import webbrowser

    from mlgitops import insights
    from mlgitops.controller import run

    if not manifest.valid_name(name):
        raise click.ClickException(f"{name!r} is not a model name (a lowercase DNS label such as "
                                   "credit-risk)")
    info = run.read_controller(repo)
    live = str(info["url"]) if info and run.controller_alive(repo, info) else None
    rows = [(d, insights.decision_url(repo, d, gateway=live))
            for d in insights.decision_records(repo, name)]
    if as_json:
        click.echo(json.dumps([{**d.to_dict(), "url": url} for d, url in rows], indent=2))
    elif not rows:
        ui.console.print(f"No decisions of {name} are recorded under "
                         f"{settings.state_dir(repo)}; run `mlgitops up --repo {repo}` "
                         "and publish it first.")
    else:
        table = Table("#", "time (UTC)", "kind", "version", "previous", "verdict")
        if wide:
            table.add_column("url", no_wrap=True)
        for column in table.columns[:5]:
            column.no_wrap = True
        for i, (d, url) in enumerate(rows, 1):
            cells = [str(i), decisions.iso(d.at).replace("T", " ").removesuffix("Z"),
                     d.kind.value, _short(d.version), _short(d.previous_version), d.verdict]
            table.add_row(*cells, *([url] if wide else []))
        _print_table(table, wide=wide)
        if not wide:  # the links whole, one per line: a terminal makes them clickable
            for i, (_, url) in enumerate(rows, 1):
                ui.out.print(f"{i:>2}  {url}", soft_wrap=True, highlight=False)
    if open_latest:
        if not rows:
            raise click.ClickException(f"there is no decision of {name} to open")
        url = rows[-1][1]
        if not webbrowser.open(url):
            ui.console.print(f"No browser could be started here; open {url}")


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), help="Where to create the demo repo.")
@click.option("--port", type=int, default=0, help="Gateway port (0 = pick a free one).")
@click.option("--kubernetes", "on_kubernetes", is_flag=True,
              help="The same story on a local Kubernetes API server, deployed by the operator "
                   "(needs the binaries of tools/k8s/build.sh, or Go to build them).")
def demo(workdir: Path | None, port: int, on_kubernetes: bool) -> None:
    """The whole loop on this machine, end to end, with timings."""
    if on_kubernetes:
        from mlgitops import demo_k8s

        demo_k8s.run(workdir=workdir)
        return
    with ui.console.status("mlgitops demo: loading scikit-learn, MLflow and Evidently…"):
        from mlgitops import demo as demo_mod
        from mlgitops.controller import run as _run  # noqa: F401  (imported here, with a spinner)

    demo_mod.run(workdir=workdir, port=port)


@main.group()
def trust() -> None:
    """Which types and functions models may load (one policy per repository)."""


@trust.command(name="allow")
@click.argument("types", nargs=-1, required=True)
@click.option("--repo", default=".", type=click.Path(exists=True, path_type=Path), show_default=True)
@click.option("--reason", default="", help="Why it is safe (kept in the policy file).")
def trust_allow(types: tuple[str, ...], repo: Path, reason: str) -> None:
    """Admit TYPES (exact names a refusal printed) for the repository at --repo."""
    from mlgitops.adapters import files
    from mlgitops.core import trust as trust_mod

    where = settings.trust_file(repo)
    if where is None:
        raise errors.ConfigError(f"{repo.resolve()} is not a model repository (no .git); pass "
                                 "--repo the directory `mlgitops init` created, or its bare remote")
    for t in types:
        if not trust_mod.valid_name(t):
            raise errors.ConfigError(f"{t!r} is not a type name; give the exact dotted name a "
                                     "refusal printed, e.g. sklearn.preprocessing.MyScaler")
        if trust_mod.never_loadable(t):
            raise errors.ConfigError(f"{t}, {trust_mod.never_reason(t)}")
    entries = settings.read_trust_file(where.path) if where.path.is_file() else {}
    for t in types:
        if trust_mod.by_default(t):
            click.echo(f"{t} is admitted by default; nothing to add")
        else:
            entries[t] = reason or entries.get(t, "")
    files.write_atomic(where.path, trust_mod.render_file(entries).encode())
    click.echo(f"{where.path}: admits {', '.join(sorted(entries)) or 'nothing beyond the defaults'}")
    if where.hosted is not None:
        click.echo(f"origin is {where.hosted}, not on this machine: this is a local copy that "
                   "publish, validate and `mlgitops up` here read. Install the same file as "
                   f"{settings.REMOTE_TRUST_FILE} in the bare repository on the Git host (the "
                   "directory with HEAD and hooks/), where the mlgitops pre-receive hook reads "
                   "it; a controller elsewhere reads it with MLGITOPS_TRUST_POLICY=FILE.")


@trust.command(name="list")
@click.option("--repo", default=".", type=click.Path(exists=True, path_type=Path), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trust_list(repo: Path, as_json: bool) -> None:
    """Show the effective trust policy of --repo: defaults, the team's file, the environment."""
    from mlgitops.core import trust as trust_mod

    rows = [(t, "default (tree storage, bounds-checked)", "") for t in sorted(trust_mod.CHECKED_TYPES)]
    rows += [(t, "default (no code)", "") for t in sorted(trust_mod.DEFAULT_TYPES)]
    rows += [(t, src, why) for t, (src, why) in sorted(settings.trust_sources(repo=repo).items())]
    where = settings.trust_file(repo)
    if as_json:
        click.echo(json.dumps({"file": str(where.path) if where else None,
                               "admitted": [{"type": t, "source": s, "reason": r} for t, s, r in rows],
                               "never": sorted(trust_mod.NEVER_MODULES)}, indent=2))
        return
    table = Table("type", "admitted by", "reason", box=None)
    for row in rows:
        table.add_row(*row)
    ui.console.print(table)
    if where is not None:
        ui.console.print(f"team file: {where.path}" + ("" if where.path.is_file() else " (none yet)"))
    ui.console.print("never admitted: builtins, os, subprocess, importlib and other modules that "
                     "run code or reach the system; lambdas and notebook (__main__) functions")


def _register_serve() -> None:
    try:
        from mlgitops.server.cli import serve
    except ImportError:  # pragma: no cover - the server package is part of the distribution
        return
    main.add_command(serve)


_register_serve()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
