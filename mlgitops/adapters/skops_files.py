"""skops files read as data: schema, arrays, canonical bytes, identity, tree bounds checks.

A skops file is a zip of ``schema.json`` (a tree of typed nodes) and ``.npy`` arrays. This
module reads both as data (``numpy.load(allow_pickle=False)``), never imports skops and never
constructs an object from the file, so it is safe on content nobody validated yet.

- `canonicalize` rewrites a file so the same estimator always gives the same bytes (skops names
  nodes and arrays after ``id()`` of Python objects, and zip entries carry the time).
- `identity` is the fitted estimator's state (schema and arrays, without skops' version);
  `recipe` is its class and hyper-parameters, random seeds aside (how it was trained).
- `references` says what each name a file refers to is (function, class, data type): skops
  trusts numpy ufuncs by default, mlgitops asks for every function (`core.trust`).
- `skops_trees.check_trees` verifies the node arrays of the tree types skops leaves untrusted
  (decision trees, gradient-boosting predictors, the KD and ball trees of nearest neighbours).

Sizes are bounded before anything is read (`check_bounds`): the members' unpacked sizes and
compression ratios, the schema's size, and each array's header against its member's size.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mlgitops import errors
from mlgitops.core import trust

SCHEMA = "schema.json"
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 200_000
#: What the members of one skops file may unpack to, together (checked before reading any).
MAX_UNPACKED_BYTES = 2 * 1024**3
#: Unpacked / packed size of one member over `RATIO_FLOOR` bytes (deflate tops out near 1000).
MAX_RATIO = 200
RATIO_FLOOR = 16 * 1024 * 1024
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_VOLATILE = ("_skops_version", "protocol")
#: Hyper-parameters left out of a recipe: a new seed is the same training run again.
_SEEDS = frozenset({"random_state", "seed"})


@dataclass(frozen=True)
class SkopsFile:
    path: Path
    schema: dict[str, Any]
    names: frozenset[str]
    zip: zipfile.ZipFile

    def array(self, file_name: str) -> np.ndarray:
        """One ``.npy`` member as an array (no pickled objects).

        Its header is read first: the shape and dtype it declares must be exactly the bytes
        the member holds (`_open` bounded those), so nothing is allocated for a lie.
        """
        if file_name not in self.names:
            raise errors.ModelError(f"{self.path.name}: names array {file_name!r} that it does not contain")
        try:
            with self.zip.open(file_name) as fp:
                _check_npy_header(fp, self.zip.getinfo(file_name).file_size,
                                  where=f"{self.path.name}: array {file_name}")
                fp.seek(0)
                value: np.ndarray = np.lib.format.read_array(fp, allow_pickle=False)
            return value
        except errors.ModelError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise errors.ModelError(
                f"{self.path.name}: array {file_name} is not a plain numeric array ({exc})"
            ) from exc


def _check_npy_header(fp: IO[bytes], size: int, *, where: str) -> None:
    """ModelError unless the ``.npy`` header at ``fp`` declares exactly the ``size``-byte member."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise errors.ModelError(f"{where}: is a .npy of version {version}; republish the model")
    if dtype.hasobject:
        raise errors.ModelError(f"{where}: holds Python objects, not numbers; republish the model")
    count = 1
    for n in shape:
        count *= int(n)
    declared, held = count * dtype.itemsize, size - fp.tell()
    if declared != held:
        raise errors.ModelError(
            f"{where}: its header declares shape {tuple(shape)} of {dtype} ({declared} bytes) "
            f"but it holds {held} bytes; the file is malformed or hostile: republish the model"
        )


def _check_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """ModelError, before any member is read, when the zip would unpack to too much.

    Each member's declared size (which zipfile never reads past), their sum, and each large
    member's compression ratio are bounded: a zip bomb is refused without being inflated.
    """
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
            raise errors.ModelError(
                f"{path.name}: member {info.filename} unpacks to {info.file_size} bytes from "
                f"{info.compress_size} ({ratio:.0f} times), over the {MAX_RATIO}-times limit for "
                f"a member over {RATIO_FLOOR // 1024**2} MiB; a zip bomb is refused unread: republish the model"
            )
        if total > MAX_UNPACKED_BYTES:
            raise errors.ModelError(
                f"{path.name}: its members unpack to over {total} bytes (counting up to "
                f"{info.filename}), over the {MAX_UNPACKED_BYTES // 1024**3} GiB limit for one "
                "skops file; refusing to unpack it: republish a smaller model"
            )


def check_bounds(path: Path) -> None:
    """The bounds `read` checks (entries, unpacked sizes, compression ratios, schema size),
    before anything else (skops itself) reads ``path``; ModelError names what is over."""
    _open(path).zip.close()


def _open(path: Path) -> SkopsFile:
    zf: zipfile.ZipFile | None = None
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise errors.ModelError(f"{path.name}: has {len(infos)} members; refusing a zip that large")
        _check_members(path, infos)
        info = zf.getinfo(SCHEMA)
        if info.file_size > MAX_SCHEMA_BYTES:
            raise errors.ModelError(f"{path.name}: schema.json is {info.file_size} bytes; too large")
        schema = json.loads(zf.read(SCHEMA))
        if not isinstance(schema, dict):
            raise errors.ModelError(f"{path.name}: schema.json is not an object; republish the model")
    except errors.ModelError:
        if zf is not None:
            zf.close()
        raise
    except FileNotFoundError as exc:
        raise errors.ModelError(f"{path}: missing; republish the model") from exc
    except (OSError, KeyError, ValueError, RecursionError, zipfile.BadZipFile) as exc:
        if zf is not None:
            zf.close()
        raise errors.ModelError(
            f"{path.name}: is not a readable skops file ({type(exc).__name__}); republish the model"
        ) from exc
    return SkopsFile(path, schema, frozenset(i.filename for i in infos), zf)


def read(path: Path) -> SkopsFile:
    return _open(path)


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every node (a mapping) of a schema tree, depth first."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if "__class__" in n:
                yield n
            stack.extend(reversed(list(n.values())))
        elif isinstance(n, list):
            stack.extend(reversed(n))


def _renumbered(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The schema with ``__id__`` numbered by first appearance, and old -> new array names."""
    ids: dict[Any, int] = {}
    renamed: dict[str, str] = {}

    def visit(n: Any) -> Any:
        if isinstance(n, dict):
            out: dict[str, Any] = {}
            for k, v in n.items():
                if k == "__id__":
                    out[k] = ids.setdefault(v, len(ids) + 1)
                else:
                    out[k] = visit(v)
            f = n.get("file")
            if isinstance(f, str) and f.endswith((".npy", ".npz")):
                out["file"] = renamed.setdefault(f, f"{len(renamed) + 1}{f[-4:]}")
            return out
        if isinstance(n, list):
            return [visit(v) for v in n]
        return n

    try:
        return visit(schema), renamed
    except RecursionError as exc:
        raise errors.ModelError("the skops schema is nested too deeply; republish the model") from exc


def canonicalize(path: Path) -> None:
    """Rewrite ``path`` so that the same estimator state always gives the same bytes."""
    f = _open(path)
    schema, renamed = _renumbered(f.schema)
    members = {new: f.zip.read(old) for old, new in renamed.items()}
    f.zip.close()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as out:
        def put(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            out.writestr(info, data)

        # key order is kept: a DictNode's key_types list follows its content's order
        put(SCHEMA, json.dumps(schema, separators=(",", ":")).encode())
        for name in sorted(members, key=lambda n: int(n.split(".")[0])):
            put(name, members[name])
    path.write_bytes(buf.getvalue())


def identity(path: Path) -> str:
    """``sha256:`` of the fitted state: the renumbered schema (without skops' version) and arrays."""
    f = _open(path)
    try:
        schema, renamed = _renumbered(f.schema)
        for key in _VOLATILE:
            schema.pop(key, None)
        h = hashlib.sha256(json.dumps(schema, sort_keys=True).encode())
        for old, new in sorted(renamed.items(), key=lambda kv: int(kv[1].split(".")[0])):
            if old not in f.names:
                raise errors.ModelError(f"{path.name}: names array {old!r} that it does not contain")
            h.update(new.encode() + b"\0")
            with f.zip.open(old) as member:
                while chunk := member.read(1 << 20):
                    h.update(chunk)
        return "sha256:" + h.hexdigest()
    finally:
        f.zip.close()


def _params(node: Any) -> Any:
    """Class and hyper-parameters of an object node, recursively (fitted ``x_`` attributes left out)."""
    if isinstance(node, list):
        return [_params(v) for v in node]
    if not isinstance(node, dict):
        return node
    loader = node.get("__loader__")
    if loader == "JsonNode":
        return node.get("content")
    if loader == "NdArrayNode":
        return {"array": node.get("file") or node.get("content")}
    content = node.get("content")
    if loader == "ObjectNode" and isinstance(content, dict):
        inner = content.get("content")
        attrs: dict[str, Any] = inner if isinstance(inner, dict) else {}
        return {
            "class": f"{node.get('__module__')}.{node.get('__class__')}",
            "params": {k: _params(v) for k, v in sorted(attrs.items())
                       if not k.startswith("_") and not k.endswith("_") and k not in _SEEDS},
        }
    if loader in ("ListNode", "TupleNode", "SetNode"):
        return [_params(v) for v in content] if isinstance(content, list) else None
    if loader == "DictNode" and isinstance(content, dict):
        return {k: _params(v) for k, v in sorted(content.items())}
    return {"node": f"{node.get('__module__')}.{node.get('__class__')}"}


def recipe(path: Path) -> str:
    """``sha256:`` of the estimator's class and hyper-parameters (not its fitted state)."""
    f = _open(path)
    try:
        params = _params(f.schema)
    except RecursionError as exc:
        raise errors.ModelError("the skops schema is nested too deeply; republish the model") from exc
    finally:
        f.zip.close()
    return "sha256:" + hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


#: skops loaders whose node names a callable (a partial call names the function it wraps too).
_FUNCTION_LOADERS = frozenset({"FunctionNode", "MethodNode", "OperatorFuncNode", "PartialNode"})


def _reference(node: dict[str, Any]) -> tuple[str, str]:
    name = f"{node.get('__module__')}.{node.get('__class__')}"
    loader = node.get("__loader__")
    if loader == "MethodNode":
        content = node.get("content")
        func = content.get("func") if isinstance(content, dict) else None
        return f"{name}.{func}", trust.FUNCTION
    if loader in _FUNCTION_LOADERS:
        return name, trust.FUNCTION
    if loader == "DTypeNode":
        return name, trust.DATA_TYPE
    if loader == "TypeNode" and str(node.get("__class__"))[:1].islower():
        # skops stores built-in functions (exec, len) as types; numpy's lowercase types are data
        return name, (trust.DATA_TYPE if node.get("__module__") == "numpy" else trust.BUILTIN_FUNCTION)
    return name, trust.CLASS


def references(path: Path) -> dict[str, str]:
    """Every name the file refers to, with what it is (`core.trust` FUNCTION, CLASS, DATA_TYPE)."""
    f = _open(path)
    try:
        return dict(_reference(n) for n in walk(f.schema)
                    if n.get("__module__") and n.get("__loader__") != "CachedNode")
    finally:
        f.zip.close()


def functions(kinds: dict[str, str]) -> list[str]:
    """The names of ``kinds`` (`references`) that are functions."""
    return sorted(n for n, k in kinds.items() if k == trust.FUNCTION)
