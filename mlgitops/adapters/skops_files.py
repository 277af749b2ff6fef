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
- `check_trees` verifies the node arrays of the tree types skops leaves untrusted (decision
  trees, gradient-boosting predictors, the KD and ball trees of nearest neighbours).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlgitops import errors
from mlgitops.core import trust

SCHEMA = "schema.json"
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 200_000
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
        """One ``.npy`` member as an array (no pickled objects)."""
        if file_name not in self.names:
            raise errors.ModelError(f"{self.path.name}: names array {file_name!r} that it does not contain")
        try:
            value: np.ndarray = np.load(io.BytesIO(self.zip.read(file_name)), allow_pickle=False)
            return value
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise errors.ModelError(
                f"{self.path.name}: array {file_name} is not a plain numeric array ({exc})"
            ) from exc


def _open(path: Path) -> SkopsFile:
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise errors.ModelError(f"{path.name}: has {len(infos)} members; refusing a zip that large")
        info = zf.getinfo(SCHEMA)
        if info.file_size > MAX_SCHEMA_BYTES:
            raise errors.ModelError(f"{path.name}: schema.json is {info.file_size} bytes; too large")
        schema = json.loads(zf.read(SCHEMA))
    except errors.ModelError:
        raise
    except FileNotFoundError as exc:
        raise errors.ModelError(f"{path}: missing; republish the model") from exc
    except (OSError, KeyError, ValueError, RecursionError, zipfile.BadZipFile) as exc:
        raise errors.ModelError(
            f"{path.name}: is not a readable skops file ({type(exc).__name__}); republish the model"
        ) from exc
    if not isinstance(schema, dict):
        raise errors.ModelError(f"{path.name}: schema.json is not an object; republish the model")
    return SkopsFile(path, schema, frozenset(i.filename for i in infos), zf)


def read(path: Path) -> SkopsFile:
    return _open(path)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
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
            h.update(new.encode() + b"\0" + f.zip.read(old))
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
        return dict(_reference(n) for n in _walk(f.schema)
                    if n.get("__module__") and n.get("__loader__") != "CachedNode")
    finally:
        f.zip.close()


def functions(kinds: dict[str, str]) -> list[str]:
    """The names of ``kinds`` (`references`) that are functions."""
    return sorted(n for n, k in kinds.items() if k == trust.FUNCTION)


# tree bounds checks ---------------------------------------------------------------------------

def _json_int(node: Any, *, what: str) -> int:
    if isinstance(node, dict) and node.get("__loader__") == "JsonNode":
        try:
            value = json.loads(node.get("content", ""))
        except (TypeError, ValueError):
            value = None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise errors.ModelError(f"{what} is not an integer")


def _attrs(node: dict[str, Any]) -> dict[str, Any]:
    content = node.get("content")
    inner = content.get("content") if isinstance(content, dict) else None
    return inner if isinstance(inner, dict) else {}


def _array_of(f: SkopsFile, node: Any, *, what: str) -> np.ndarray:
    if not isinstance(node, dict) or node.get("__loader__") != "NdArrayNode" or not isinstance(
        node.get("file"), str
    ):
        raise errors.ModelError(f"{what} is not a stored array")
    return f.array(node["file"])


def _check_tree(f: SkopsFile, node: dict[str, Any], where: str) -> None:
    args = ((node.get("__reduce__") or {}).get("args") or {}).get("content")
    if not isinstance(args, list) or len(args) != 3:
        raise errors.ModelError(f"{where}: its constructor arguments are not (n_features, n_classes, n_outputs)")
    n_features = _json_int(args[0], what=f"{where}: n_features")
    n_outputs = _json_int(args[2], what=f"{where}: n_outputs")
    n_classes = _array_of(f, args[1], what=f"{where}: n_classes")
    attrs = _attrs(node)
    node_count = _json_int(attrs.get("node_count"), what=f"{where}: node_count")
    max_depth = _json_int(attrs.get("max_depth"), what=f"{where}: max_depth")
    nodes = _array_of(f, attrs.get("nodes"), what=f"{where}: nodes")
    values = _array_of(f, attrs.get("values"), what=f"{where}: values")
    fields = nodes.dtype.names or ()
    if not {"left_child", "right_child", "feature"} <= set(fields) or nodes.ndim != 1:
        raise errors.ModelError(f"{where}: nodes is not sklearn's node record array")
    if n_features < 1 or n_outputs < 1 or node_count < 1 or max_depth < 0:
        raise errors.ModelError(f"{where}: sizes must be positive")
    if len(nodes) != node_count or values.ndim != 3 or values.shape[0] != node_count:
        raise errors.ModelError(f"{where}: node_count {node_count} does not match its arrays")
    if n_classes.ndim != 1 or len(n_classes) != n_outputs or values.shape[1] != n_outputs:
        raise errors.ModelError(f"{where}: n_outputs does not match n_classes and values")
    if n_classes.size and (int(n_classes.max()) > values.shape[2] or int(n_classes.min()) < 1):
        raise errors.ModelError(f"{where}: n_classes exceeds the values array")
    left, right, feature = (nodes[k].astype(np.int64) for k in ("left_child", "right_child", "feature"))
    index = np.arange(node_count)
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise errors.ModelError(f"{where}: a node has exactly one child")
    inner = ~leaf
    ok = (left[inner] > index[inner]) & (left[inner] < node_count)
    ok &= (right[inner] > index[inner]) & (right[inner] < node_count)
    ok &= (feature[inner] >= 0) & (feature[inner] < n_features)
    if not bool(ok.all()):
        bad = int(index[inner][~ok][0])
        raise errors.ModelError(
            f"{where}: node {bad} points outside the tree (child or feature index out of range)"
        )


def _check_predictor(f: SkopsFile, node: dict[str, Any], where: str, n_features: int | None) -> None:
    attrs = _attrs(node)
    nodes = _array_of(f, attrs.get("nodes"), what=f"{where}: nodes")
    fields = set(nodes.dtype.names or ())
    if not {"left", "right", "feature_idx", "is_leaf"} <= fields or nodes.ndim != 1 or not len(nodes):
        raise errors.ModelError(f"{where}: nodes is not sklearn's predictor record array")
    count = len(nodes)
    index = np.arange(count)
    inner = nodes["is_leaf"] == 0
    left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)
    feat = nodes["feature_idx"].astype(np.int64)
    ok = (left[inner] > index[inner]) & (left[inner] < count)
    ok &= (right[inner] > index[inner]) & (right[inner] < count) & (feat[inner] >= 0)
    if n_features is not None:
        ok &= feat[inner] < n_features
    if "is_categorical" in fields and "bitset_idx" in fields:
        cat = inner & (nodes["is_categorical"] != 0)
        for key in ("binned_left_cat_bitsets", "raw_left_cat_bitsets"):
            bitsets = _array_of(f, attrs.get(key), what=f"{where}: {key}")
            if cat.any() and int(nodes["bitset_idx"][cat].max()) >= len(bitsets):
                raise errors.ModelError(f"{where}: a categorical split points outside {key}")
    if not bool(ok.all()):
        bad = int(index[inner][~ok][0])
        raise errors.ModelError(f"{where}: node {bad} points outside the tree")


def _resolve(node: Any, ids: dict[Any, dict[str, Any]]) -> Any:
    if isinstance(node, dict) and node.get("__loader__") == "CachedNode":
        return ids.get(node.get("__id__"), node)
    return node


def _check_binary_tree(f: SkopsFile, node: dict[str, Any], where: str, *, kd: bool,
                       ids: dict[Any, dict[str, Any]]) -> None:
    """A KDTree/BallTree state: every node's sample range and children, and every sample index,
    inside the arrays scikit-learn reads without bounds checks when it queries."""
    content = node.get("content")
    state = content.get("content") if isinstance(content, dict) else None
    if not isinstance(state, list) or len(state) != 13:
        raise errors.ModelError(f"{where}: its state is not scikit-learn's 13 fields")
    state = [_resolve(x, ids) for x in state]
    data = _array_of(f, state[0], what=f"{where}: data")
    idx = _array_of(f, state[1], what=f"{where}: idx_array")
    nodes = _array_of(f, state[2], what=f"{where}: node_data")
    bounds = _array_of(f, state[3], what=f"{where}: node_bounds")
    leaf_size = _json_int(state[4], what=f"{where}: leaf_size")
    n_levels = _json_int(state[5], what=f"{where}: n_levels")
    n_nodes = _json_int(state[6], what=f"{where}: n_nodes")
    if data.ndim != 2 or min(data.shape) < 1 or idx.ndim != 1 or len(idx) != data.shape[0]:
        raise errors.ModelError(f"{where}: data and idx_array do not describe the same samples")
    n, d = data.shape
    fields = set(nodes.dtype.names or ())
    if nodes.ndim != 1 or not {"idx_start", "idx_end", "is_leaf"} <= fields:
        raise errors.ModelError(f"{where}: node_data is not scikit-learn's node record array")
    m = len(nodes)
    if leaf_size < 1 or not 1 <= n_levels <= 62 or n_nodes != m or m != 2 ** n_levels - 1:
        raise errors.ModelError(f"{where}: n_nodes {n_nodes} and n_levels {n_levels} do not match "
                                f"its {m} nodes")
    if bounds.shape != ((2 if kd else 1), m, d):
        raise errors.ModelError(f"{where}: node_bounds has shape {bounds.shape}, not the tree's")
    if not np.issubdtype(idx.dtype, np.integer) or (n and (int(idx.min()) < 0 or int(idx.max()) >= n)):
        raise errors.ModelError(f"{where}: idx_array points outside the {n} samples")
    start, end = nodes["idx_start"].astype(np.int64), nodes["idx_end"].astype(np.int64)
    inner = nodes["is_leaf"] == 0
    index = np.arange(m)
    ok = (start >= 0) & (start <= end) & (end <= n)
    ok &= ~inner | (2 * index + 2 < m)
    if not bool(ok.all()):
        raise errors.ModelError(f"{where}: node {int(index[~ok][0])} points outside the tree")
    weight = state[12]
    if not (isinstance(weight, dict) and weight.get("__loader__") == "JsonNode"
            and weight.get("content") in (None, "null")):
        w = _array_of(f, weight, what=f"{where}: sample_weight")
        if w.shape != (n,):
            raise errors.ModelError(f"{where}: sample_weight does not match its {n} samples")
    metric = state[11]
    if isinstance(metric, dict):
        _check_metric(f, metric, where, n_features=d)


def _check_metric(f: SkopsFile, node: dict[str, Any], where: str, *, n_features: int) -> None:
    """A distance metric's weights (``vec``) match the features it is used on, or are empty."""
    content = node.get("content")
    state = content.get("content") if isinstance(content, dict) else None
    if not isinstance(state, list) or len(state) < 3:
        return  # not a metric state skops could build into a weighted metric
    weighted = str(node.get("__class__", "")).startswith(("Minkowski", "WMinkowski", "SEuclidean"))
    vec = _array_of(f, state[1], what=f"{where}: the distance metric's weights")
    if weighted and (vec.ndim != 1 or len(vec) not in (0, n_features)):
        raise errors.ModelError(f"{where}: the distance metric's weights do not match its "
                                f"{n_features} features")


def check_trees(path: Path) -> int:
    """Bounds-check every Tree, TreePredictor, KDTree and BallTree in ``path``; return how many.

    These are the checks scikit-learn does not make when it predicts: every child index points
    forward inside the node array (so no cycles and no out-of-range reads) and every split's
    feature exists. ModelError names the first bad node.
    """
    f = _open(path)
    try:
        n_features: int | None = None
        root_attrs = _attrs(f.schema)
        if "n_features_in_" in root_attrs:
            try:
                n_features = _json_int(root_attrs["n_features_in_"], what="n_features_in_")
            except errors.ModelError:
                n_features = None
        checked = 0
        ids = {n["__id__"]: n for n in _walk(f.schema)
               if "__id__" in n and n.get("__loader__") != "CachedNode"}
        for node in _walk(f.schema):
            cls = f"{node.get('__module__')}.{node.get('__class__')}"
            where = f"{path.name}: {node.get('__class__')} #{checked + 1}"
            if cls == "sklearn.tree._tree.Tree":
                _check_tree(f, node, where)
                checked += 1
            elif cls == "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor":
                _check_predictor(f, node, where, n_features)
                checked += 1
            elif cls in ("sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree"):
                _check_binary_tree(f, node, where, kd=cls.endswith("KDTree"), ids=ids)
                checked += 1
        return checked
    finally:
        f.zip.close()
