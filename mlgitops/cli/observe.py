"""Commands that read what happened, without acting: status, history, report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mlgitops import errors, settings, ui
from mlgitops.adapters import git
from mlgitops.cli.group import main, model_repo, print_table, repo_option, short, wide_option
from mlgitops.core import decisions, layout, manifest, rollout
from mlgitops.core import digest as digest_mod


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
        "performance": _performance(settings.state_dir(root), sorted(store.models)),
    }


def _performance(state_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    """Each model's realized (and estimated) performance per version, where rows are logged."""
    from mlgitops.controller import feedback

    found = [feedback.local_performance(state_dir, n) for n in names]
    return [p.to_dict() for p in found if p.overall]


def _print_performance(doc: list[dict[str, Any]], wide: bool) -> None:
    table = Table("model", "version", "labelled", "realized", "estimated (CBPE)")
    for perf in doc:
        for v in perf["versions"]:
            table.add_row(perf["model"], short(v["version"]), f"{v['labelled']}/{v['rows']}",
                          ", ".join(f"{k} {x:.4g}" for k, x in v["realized"].items()) or "-",
                          ", ".join(f"{k} {x:.4g}" for k, x in v["estimated"].items()) or "-")
    print_table(table, wide=wide)
    ui.out.print("Estimated figures assume calibrated probabilities (CBPE); realized ones are "
                 "scikit-learn's on the labelled rows.", highlight=False, soft_wrap=True)


@main.command()
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (stable shape).")
@wide_option
def status(repo: Path, as_json: bool, wide: bool) -> None:
    """Per model: desired and served commit, health, conditions, endpoint."""
    doc = _status_doc(model_repo(repo))
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
    head = short(doc["head"]) if doc["head"] else "not read yet"
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
        cells = [m["name"], m["health"], short(m["desiredCommit"]), short(m["servedCommit"]),
                 conds]
        if wide:
            cells += [short(m["lastAppliedCommit"]), short(m["lastAttemptedCommit"]),
                      m["endpoint"] or "-"]
        table.add_row(*cells)
        if not wide and m["endpoint"]:
            notes.append(f"{m['name']}: {m['endpoint']}")
        notes.extend(f"{m['name']}: {c['type']}: {c['message']}" for c in true
                     if c["type"] in ("Stalled", "Performance") and c["message"])
        if m.get("rollout"):
            notes.append(f"{m['name']}: rollout: {rollout.summary(m['rollout'])}")
    print_table(table, wide=wide)
    for line in notes:
        ui.out.print(line, soft_wrap=True, highlight=False)
    if doc["performance"]:
        _print_performance(doc["performance"], wide)


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

    root = model_repo(repo)
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
        cells = [str(r["time"])[:19].replace("T", " "), r["kind"], short(r["commit"]),
                 str(r["message"])]
        if wide:
            cells.append(digest_mod.short(r["digest"]) if r["digest"] else "-")
        table.add_row(*cells)
    print_table(table, wide=wide)
    if hidden:
        ui.out.print(f"({hidden} closed drift window(s) not shown; --windows lists them)")


@main.command()
@click.argument("name")
@repo_option
@click.option("--open", "open_latest", is_flag=True, help="Open the latest decision in a browser.")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@click.option("--build", is_flag=True,
              help="Instead: write an Evidently report of NAME's live data now.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="List the newest LIMIT decisions (0: every one).")
@wide_option
def report(name: str, repo: Path, open_latest: bool, as_json: bool, build: bool,
           wide: bool, limit: int) -> None:
    """List NAME's decisions (deploys, holds, alerts, reverts) with the URLs of their pages."""
    from mlgitops.controller import reports

    repo = model_repo(repo)
    if not build:
        _decisions(name, repo, open_latest=open_latest, as_json=as_json, wide=wide, limit=limit)
        return
    with ui.console.status(f"building the Evidently report for {name}…"):
        html = reports.build_report(repo, name)
    ui.console.print(f"Report: {html}")
    ui.console.print(f"Open it in a browser, or run: evidently ui --workspace "
                     f"{reports.workspace_dir(settings.state_dir(repo))}")


def _decisions(name: str, repo: Path, *, open_latest: bool, as_json: bool, wide: bool,
               limit: int = 100) -> None:
    """``mlgitops report NAME``: the recorded decisions of NAME, newest last."""
    import webbrowser

    from mlgitops.controller import run
    from mlgitops.notebook import insights

    if not manifest.valid_name(name):
        raise click.ClickException(f"{name!r} is not a model name (a lowercase DNS label such as "
                                   "credit-risk)")
    info = run.read_controller(repo)
    live = str(info["url"]) if info and run.controller_alive(repo, info) else None
    rows = [(d, insights.decision_url(repo, d, gateway=live))
            for d in insights.decision_records(repo, name, limit=limit or None)]
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
                     d.kind.value, short(d.version), short(d.previous_version), d.verdict]
            table.add_row(*cells, *([url] if wide else []))
        print_table(table, wide=wide)
        if not wide:  # the links whole, one per line: a terminal makes them clickable
            for i, (_, url) in enumerate(rows, 1):
                ui.out.print(f"{i:>2}  {url}", soft_wrap=True, highlight=False)
        older = insights.decision_count(repo, name) - len(rows)
        if older > 0:
            ui.out.print(f"({older} older decision(s) not shown; --limit 0 lists every one)")
    if open_latest:
        if not rows:
            raise click.ClickException(f"there is no decision of {name} to open")
        url = rows[-1][1]
        if not webbrowser.open(url):
            ui.console.print(f"No browser could be started here; open {url}")
