"""Reports over HTTP: which files of ``<state>/reports/<name>/`` may be served, and the indexes.

A request names a model and a file; it is served only when the model name is a valid model
name, the file name is a plain ``.html`` or ``.json`` name (no path, no leading dot), and the
model's directory and the file are a real directory and a regular file, not symlinks. Anything
else is "not found" with a sentence, never a hint of what exists outside the reports.

A file name that is a decision id (``/reports/<model>/<decision id>``) is that decision's page
(``<id>.html``, written by `decision_pages`); when the file is missing the page is rendered from
the decision log. `index_page` is ``/reports/``: a page of the decisions of every model, newest
first (`listing`: ``?kind=``, ``?page=``, ``?limit=``, ``?before=``), and `json_index` its JSON
form; both read one page from the log's index (`decisions.page`), never the whole log.
"""

from __future__ import annotations

import html
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgitops.adapters import decision_index
from mlgitops.controller import decisions as decision_log
from mlgitops.core import decision_page, decisions, manifest

FILE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.(?:html|json)")
MAX_FILE_BYTES = 256 * 1024 * 1024
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}


class NotServed(Exception):
    """This report cannot be served; ``str(exc)`` says why in a sentence."""


@dataclass(frozen=True)
class Entry:
    name: str
    file: str
    size: int
    modified: float

    @property
    def url(self) -> str:
        return f"/reports/{self.name}/{self.file}"


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def read(root: Path, name: str, file: str) -> tuple[bytes, str]:
    """The bytes and media type of report ``file`` of model ``name``; NotServed otherwise."""
    if not manifest.valid_name(name):
        raise NotServed(
            "No such report: the model name must be a lowercase DNS label such as credit-risk; "
            "see GET /reports/ for the reports there are."
        )
    if decisions.valid_id(file):
        return _decision(root, name, file), MEDIA_TYPES[".html"]
    if not FILE_PATTERN.fullmatch(file) or ".." in file:
        raise NotServed(
            "No such report: a report is a decision id or a plain .html or .json file name; "
            "see GET /reports/ for the decisions there are."
        )
    missing = NotServed(
        f"No report {file} for model {name}; see GET /reports/{name}/ for its reports."
    )
    folder = root / name
    if not _is_dir(folder):
        raise missing
    try:
        fd = os.open(folder / file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise missing from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise missing
        if info.st_size > MAX_FILE_BYTES:
            raise NotServed(
                f"The report {file} of model {name} is larger than {MAX_FILE_BYTES} bytes; "
                f"open it from {folder} on the controller's machine."
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return data, MEDIA_TYPES[Path(file).suffix]


def _decision(root: Path, name: str, ident: str) -> bytes:
    """The page of decision ``ident``: its file, else rendered from the decision log."""
    try:
        return read(root, name, f"{ident}.html")[0]
    except NotServed:
        pass
    record = decision_log.find(root, name, ident)
    if record is None:
        raise NotServed(
            f"No decision {ident} of model {name}; see GET /reports/{name}/ for its decisions."
        )
    history = decision_log.window_history(root, record)
    evidently = record.evidently_file is not None and (root / name / record.evidently_file).is_file()
    page = decision_page.render(record, history=history or [record],
                                evidently_available=evidently)
    return page.encode()


MAX_LIMIT = 1000


class BadQuery(ValueError):
    """A query parameter of ``/reports/`` that cannot be used; ``str(exc)`` says which and why."""


@dataclass(frozen=True)
class Listing:
    """What a ``/reports/[<name>/]`` request asks for: which kinds, which page, how long."""

    kind: str | None = None
    """``all``, a kind, or None: the default (HTML: decisions that acted; JSON: every one)."""
    page: int = 1
    limit: int = 100
    before: str | None = None
    """A cursor (`decision_index.Page.next`): the page after it, instead of ``page``."""

    def kinds(self, *, as_json: bool) -> frozenset[decisions.Kind] | None:
        if self.kind == "all" or (self.kind is None and as_json):
            return None
        if self.kind is None:
            return decision_index.ACTED
        return frozenset({decisions.Kind(self.kind)})


def _whole(params: Mapping[str, str], key: str, default: int, top: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise BadQuery(f"{key}={raw!r} is not a whole number from 1 to {top}; e.g. ?{key}=2")
    return int(raw)


def listing(params: Mapping[str, str]) -> Listing:
    """The `Listing` of a request's query (``kind``, ``page``, ``limit``, ``before``); BadQuery."""
    kind = params.get("kind") or None
    known = {k.value for k in decisions.Kind}
    if kind is not None and kind != "all" and kind not in known:
        raise BadQuery(f"kind={kind!r} is not a kind of decision; use all or one of "
                       f"{', '.join(sorted(known))}")
    before = params.get("before") or None
    if before is not None:
        try:
            decision_index.parse_cursor(before)
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
    return Listing(kind=kind, page=_whole(params, "page", 1, 1_000_000),
                   limit=_whole(params, "limit", 100, MAX_LIMIT), before=before)


def decision_page_of(root: Path, name: str | None, query: Listing, *,
                     as_json: bool, summary: bool = False) -> decision_index.Page:
    """The decisions of one page of ``/reports/[<name>/]``, newest first."""
    if not _is_dir(root):
        return decision_index.Page([], 0, None)
    return decision_log.page(root, model=name, kinds=query.kinds(as_json=as_json),
                             limit=query.limit, offset=0 if query.before else
                             (query.page - 1) * query.limit, before=query.before, summary=summary)


def index_page(root: Path, name: str | None = None, query: Listing | None = None) -> str:
    """``/reports/[<name>/]``: a page of the decisions (newest first), of ``query.kind``.

    By default quiet windows (``pass``) are left out; ``kind=all`` shows them too."""
    query = query or Listing()
    got = decision_page_of(root, name, query, as_json=False, summary=True)
    nav = decision_page.Nav(total=got.total, page=query.page, limit=query.limit,
                            kind=query.kind, more=got.next is not None)
    return decision_page.index(got.decisions, model=name, nav=nav)


def json_index(root: Path, name: str | None, query: Listing) -> dict[str, Any]:
    """``/reports/[<name>/]?format=json``: a page of decisions (every kind unless ``kind``),
    newest first, with ``page`` (``total``, ``next``: the URL of the older page), and on the first
    page the report files that are not a decision's own (its page and Evidently report are
    linked from it)."""
    got = decision_page_of(root, name, query, as_json=True)
    base = f"/reports/{name}/" if name else "/reports/"
    extra = f"&kind={query.kind}" if query.kind else ""
    return {
        "decisions": [d.to_dict() for d in got.decisions],
        "page": {"limit": query.limit, "total": got.total, "page": query.page,
                 "next": (f"{base}?format=json&limit={query.limit}{extra}&before={got.next}"
                          if got.next else None)},
        "reports": [{"name": e.name, "file": e.file, "url": e.url, "bytes": e.size,
                     "modified": e.modified} for e in index(root, name, decision_files=False)]
        if query.page == 1 and query.before is None else [],
    }


def _of_decision(model: str, file: str) -> bool:
    """Whether ``file`` is a decision's page or its Evidently report (``<id>.…``)."""
    return file.startswith(f"{model}-") and decisions.valid_id(file.split(".", 1)[0])


def index(root: Path, name: str | None = None, *, decision_files: bool = True) -> list[Entry]:
    """Every servable report (of ``name`` only when given), newest file name first per model;
    without the decisions' own files unless ``decision_files``."""
    if not _is_dir(root):
        return []
    try:
        names = sorted(os.listdir(root)) if name is None else [name]
    except OSError:
        return []
    out: list[Entry] = []
    for model in names:
        folder = root / model
        if not manifest.valid_name(model) or not _is_dir(folder):
            continue
        try:
            files = sorted(os.listdir(folder), reverse=True)
        except OSError:
            continue
        for file in files:
            if not decision_files and _of_decision(model, file):
                continue
            if not FILE_PATTERN.fullmatch(file) or ".." in file:
                continue
            try:
                info = os.lstat(folder / file)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                out.append(Entry(model, file, info.st_size, info.st_mtime))
    return out


def index_html(entries: list[Entry], *, name: str | None = None) -> str:
    """A small HTML page linking ``entries``, grouped by model."""
    title = f"Drift reports of {name}" if name else "Drift reports"
    rows: list[str] = []
    current = None
    for e in entries:
        if e.name != current:
            if current is not None:
                rows.append("</ul>")
            current = e.name
            rows.append(
                f'<h2><a href="/reports/{html.escape(e.name)}/">{html.escape(e.name)}</a></h2><ul>'
            )
        rows.append(
            f'<li><a href="{html.escape(e.url)}">{html.escape(e.file)}</a> '
            f"<small>({e.size} bytes)</small></li>"
        )
    if current is not None:
        rows.append("</ul>")
    if not entries:
        rows.append(
            "<p>No reports yet: the drift monitor writes one when it alerts or reverts.</p>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{''.join(rows)}</body></html>"
    )
