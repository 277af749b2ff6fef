"""Tree bounds checks on a skops file, read as data: the checks scikit-learn does not make.

For every decision tree, gradient-boosting predictor, KD tree and ball tree in the file, each
child index points forward inside the node array (no cycles, no out-of-range reads) and each
split's feature exists. Nothing is imported from skops and no object is built from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mlgitops import errors
from mlgitops.adapters.skops_files import SkopsFile, read, walk


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
    f = read(path)
    try:
        n_features: int | None = None
        root_attrs = _attrs(f.schema)
        if "n_features_in_" in root_attrs:
            try:
                n_features = _json_int(root_attrs["n_features_in_"], what="n_features_in_")
            except errors.ModelError:
                n_features = None
        checked = 0
        ids = {n["__id__"]: n for n in walk(f.schema)
               if "__id__" in n and n.get("__loader__") != "CachedNode"}
        for node in walk(f.schema):
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
