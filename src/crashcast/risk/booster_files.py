"""A saved booster checked in Python before LightGBM or XGBoost parses it.

Their C++ loaders trust the file: a cut or edited LightGBM text model aborts the process (a failed
check inside a parallel loop is `std::terminate`) or crashes it, and an XGBoost JSON model whose
children form a cycle crashes prediction, while an out-of-range feature index or child reads
memory it should not. So each tree is checked here to be a binary tree (every node reached once,
children after their parent) over the features model.json names, of the kind crashcast trains
(binary objective, one tree per iteration, numeric splits): `lightgbm_model` and `xgboost_model`
return the number of features and what to give the library, or raise ValueError naming the problem.
"""

from __future__ import annotations

import math
import re
from itertools import pairwise
from typing import Any

#: a booster's trees (a saved LightGBM/XGBoost model has a few hundred)
MAX_TREES = 100_000
#: LightGBM tree fields that hold one value per internal node / per leaf (optional unless required)
_PER_NODE = ("split_feature", "split_gain", "threshold", "decision_type", "left_child", "right_child",
             "internal_value", "internal_weight", "internal_count")
_PER_LEAF = ("leaf_value", "leaf_weight", "leaf_count")
_TREE_KEYS = frozenset({"Tree", "num_leaves", "num_cat", "is_linear", "shrinkage", *_PER_NODE, *_PER_LEAF})
_HEADER_KEYS = frozenset({"version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx",
                          "objective", "average_output", "feature_names", "monotone_constraints", "feature_infos",
                          "tree_sizes"})


def _int(text: str, what: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    if not re.fullmatch(r"-?\d{1,10}", text.strip()):
        raise ValueError(f"{what}: {text[:40]!r} is not an integer")
    v = int(text)
    if not lo <= v <= hi:
        raise ValueError(f"{what}: {v} is outside {lo}..{hi}")
    return v


def _ints(text: str, n: int, what: str, lo: int, hi: int) -> list[int]:
    parts = text.split()
    if len(parts) != n:
        raise ValueError(f"{what}: {len(parts)} values where {n} are needed")
    return [_int(p, what, lo, hi) for p in parts]


def _floats(text: str, n: int, what: str, finite: bool = True) -> list[float]:
    parts = text.split()
    if len(parts) != n:
        raise ValueError(f"{what}: {len(parts)} values where {n} are needed")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what}: not a list of numbers") from None
    if finite and not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: a value that is not a finite number")
    return values


def _check_tree_shape(left: list[int], right: list[int], n_leaves: int, where: str, complete: bool = True) -> None:
    """That `left`/`right` (LightGBM's: internal node index >= 0, leaf i as ~i) make one binary tree
    rooted at node 0: every node the child of at most one node, after it (so no walk leaves the tree
    or loops), and with `complete` every other node and every leaf reached."""
    if not left:
        if n_leaves != 1 and complete:
            raise ValueError(f"{where}: {n_leaves} leaves and no split; not a tree")
        return
    seen_nodes, seen_leaves = [False] * len(left), [False] * n_leaves
    for i, pair in enumerate(zip(left, right, strict=True)):
        for child in pair:
            if child >= 0:
                if not i < child < len(left) or seen_nodes[child]:
                    raise ValueError(f"{where}: node {i} has child node {child}; not a tree")
                seen_nodes[child] = True
            else:
                leaf = ~child
                if leaf >= n_leaves or seen_leaves[leaf]:
                    raise ValueError(f"{where}: node {i} has leaf {leaf} of {n_leaves}; not a tree")
                seen_leaves[leaf] = True
    if complete and (not all(seen_leaves) or not all(seen_nodes[1:])):
        raise ValueError(f"{where}: nodes or leaves no node leads to; not a tree")


def _key_values(lines: list[str], what: str, known: frozenset[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, eq, value = line.partition("=")
        if not eq or key not in known:
            raise ValueError(f"{what}: unexpected line {line[:60]!r}")
        if key in out:
            raise ValueError(f"{what}: {key} given twice")
        out[key] = value
    return out


def _lightgbm_tree(kv: dict[str, str], index: int, n_features: int) -> None:
    where = f"tree {index}"
    if kv.get("Tree") != str(index):
        raise ValueError(f"{where}: numbered {kv.get('Tree')!r}")
    n_leaves = _int(kv.get("num_leaves", ""), f"{where}: num_leaves", 1)
    if _int(kv.get("num_cat", ""), f"{where}: num_cat") != 0:
        raise ValueError(f"{where}: categorical splits (crashcast's features are all numeric)")
    if _int(kv.get("is_linear", "0"), f"{where}: is_linear", 0, 1):
        raise ValueError(f"{where}: a linear tree (crashcast trains none)")
    if "leaf_value" not in kv:
        raise ValueError(f"{where}: no leaf_value")
    _floats(kv["leaf_value"], n_leaves, f"{where}: leaf_value")
    for key in _PER_LEAF[1:]:
        if key in kv:
            _floats(kv[key], n_leaves, f"{where}: {key}", finite=False)
    if "shrinkage" in kv:
        _floats(kv["shrinkage"], 1, f"{where}: shrinkage")
    nodes = n_leaves - 1
    if nodes == 0:
        return
    for key in ("split_feature", "threshold", "left_child", "right_child"):
        if key not in kv:
            raise ValueError(f"{where}: no {key}")
    _ints(kv["split_feature"], nodes, f"{where}: split_feature", 0, n_features - 1)
    _floats(kv["threshold"], nodes, f"{where}: threshold", finite=False)
    if "decision_type" in kv and any(d & 1 for d in _ints(kv["decision_type"], nodes, f"{where}: decision_type", 0, 15)):
        raise ValueError(f"{where}: a categorical split (crashcast's features are all numeric)")
    for key in ("split_gain", "internal_value", "internal_weight", "internal_count"):
        if key in kv:
            _floats(kv[key], nodes, f"{where}: {key}", finite=False)
    left = _ints(kv["left_child"], nodes, f"{where}: left_child", -n_leaves, nodes - 1)
    right = _ints(kv["right_child"], nodes, f"{where}: right_child", -n_leaves, nodes - 1)
    _check_tree_shape(left, right, n_leaves, where)


def lightgbm_model(text: str) -> tuple[int, str]:
    """(features, model text) of a LightGBM text model (`Booster.model_to_string`) of a binary
    classifier; the text returned holds only the header and the trees checked here (the parameters
    section, which names files such as `forcedsplits_filename`, is left out: prediction reads none)."""
    head, sep, rest = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or lines[0] != "tree":
        raise ValueError("not a LightGBM text model (it starts with a 'tree' line and a header)")
    header = _key_values(lines[1:], "header", _HEADER_KEYS)
    if header.get("version") not in ("v2", "v3", "v4"):
        raise ValueError(f"version {header.get('version')!r}: not a LightGBM model version read here (v2-v4)")
    if _int(header.get("num_class", ""), "num_class") != 1 or _int(header.get("num_tree_per_iteration", ""),
                                                                     "num_tree_per_iteration") != 1:
        raise ValueError("a model of several classes; crashcast's are binary classifiers (num_class=1)")
    if not header.get("objective", "").startswith("binary"):
        raise ValueError(f"objective {header.get('objective')!r}: crashcast's are binary classifiers")
    n_features = _int(header.get("max_feature_idx", ""), "max_feature_idx") + 1
    if len(header.get("feature_names", "").split()) != n_features:
        raise ValueError(f"feature_names: not the {n_features} features max_feature_idx says")
    trees_text, end, _ = rest.partition("end of trees\n")
    if not end:
        raise ValueError("no 'end of trees' line: the file is cut short")
    blocks = [b for b in trees_text.split("\n\n") if b.strip()]
    if len(blocks) > MAX_TREES:
        raise ValueError(f"{len(blocks)} trees, more than {MAX_TREES}")
    for i, block in enumerate(blocks):
        _lightgbm_tree(_key_values(block.strip("\n").split("\n"), f"tree {i}", _TREE_KEYS), i, n_features)
    if "tree_sizes" in header:  # where LightGBM cuts the trees apart (in bytes): it must cut them where they are
        sizes = _ints(header["tree_sizes"], len(blocks), "tree_sizes", 0, 2**31 - 1)
        data = trees_text.encode("utf-8")
        starts = [m.start() for m in re.finditer(rb"(?m)^Tree=", data)]
        pos = 0
        for i, size in enumerate(sizes):
            if i >= len(starts) or starts[i] != pos:
                raise ValueError("tree_sizes: the trees are not where it says")
            pos += size
        if pos != len(data):
            raise ValueError("tree_sizes: the trees are not where it says")
    return n_features, f"{head}\n\n{trees_text}end of trees\n"


def _list(tree: dict, key: str, n: int, where: str) -> list:
    v = tree.get(key)
    if not isinstance(v, list) or len(v) != n:
        raise ValueError(f"{where}: {key} is not a list of {n} values")
    return v


def _xgb_int(v: Any, what: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    if isinstance(v, str):
        return _int(v, what, lo, hi)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{what}: {str(v)[:40]} is not an integer in {lo}..{hi}")
    return v


def _xgboost_tree(tree: Any, index: int, n_features: int) -> None:
    where = f"tree {index}"
    if not isinstance(tree, dict) or not isinstance(tree.get("tree_param"), dict):
        raise ValueError(f"{where}: not an XGBoost tree")
    n = _xgb_int(tree["tree_param"].get("num_nodes"), f"{where}: num_nodes", 1)
    if _xgb_int(tree["tree_param"].get("size_leaf_vector", "1"), f"{where}: size_leaf_vector") > 1:
        raise ValueError(f"{where}: vector leaves (a model of several targets)")
    left, right = _list(tree, "left_children", n, where), _list(tree, "right_children", n, where)
    split = _list(tree, "split_indices", n, where)
    if any(t != 0 for t in _list(tree, "split_type", n, where)) or tree.get("categories"):
        raise ValueError(f"{where}: categorical splits (crashcast's features are all numeric)")
    for key in ("split_conditions", "default_left", "base_weights"):
        _list(tree, key, n, where)
    # XGBoost's form: node i's children are node ids, -1 (both) for a leaf; made LightGBM's form to check
    internal = [i for i in range(n) if left[i] != -1 or right[i] != -1]
    leaf_of = {i: k for k, i in enumerate(j for j in range(n) if left[j] == -1 and right[j] == -1)}
    node_of = {i: k for k, i in enumerate(internal)}
    if 0 not in node_of and n > 1:
        raise ValueError(f"{where}: its root is a leaf, yet it has {n} nodes; not a tree")

    def as_child(c: Any, parent: int) -> int:
        c = _xgb_int(c, f"{where}: child of node {parent}", 0, n - 1)
        if c <= parent:
            raise ValueError(f"{where}: node {parent} has child node {c}; not a tree")
        return node_of[c] if c in node_of else ~leaf_of[c]

    for i in internal:
        _xgb_int(split[i], f"{where}: split_indices[{i}]", 0, n_features - 1)
    # nodes XGBoost pruned (`num_deleted`) stay in the arrays, reached by no node
    _check_tree_shape([as_child(left[i], i) for i in internal], [as_child(right[i], i) for i in internal],
                      len(leaf_of), where, complete=False)


def xgboost_model(doc: Any) -> int:
    """The number of features of an XGBoost JSON model (`Booster.save_model('*.json')`, parsed) of a
    binary classifier (`binary:logistic`, gbtree)."""
    try:
        learner = doc["learner"]
        param, objective, booster = learner["learner_model_param"], learner["objective"], learner["gradient_booster"]
        model = booster["model"]
        trees = model["trees"]
    except (KeyError, TypeError):
        raise ValueError("not an XGBoost JSON model (learner, its objective and gradient_booster's trees)") from None
    if not isinstance(param, dict) or not isinstance(objective, dict) or not isinstance(booster, dict):
        raise ValueError("not an XGBoost JSON model")
    if objective.get("name") != "binary:logistic":
        raise ValueError(f"objective {objective.get('name')!r}: crashcast's are binary:logistic classifiers")
    if booster.get("name") != "gbtree":
        raise ValueError(f"booster {booster.get('name')!r}: crashcast's are gbtree")
    if _xgb_int(param.get("num_class", "0"), "num_class") > 1 or _xgb_int(param.get("num_target", "1"), "num_target") > 1:
        raise ValueError("a model of several classes or targets; crashcast's are binary classifiers")
    n_features = _xgb_int(param.get("num_feature"), "num_feature", 1)
    if not isinstance(trees, list) or len(trees) > MAX_TREES:
        raise ValueError(f"trees: a list of at most {MAX_TREES} is needed")
    tree_param = model.get("gbtree_model_param") if isinstance(model, dict) else None
    if not isinstance(tree_param, dict) or _xgb_int(tree_param.get("num_trees"), "num_trees") != len(trees):
        raise ValueError(f"gbtree_model_param.num_trees is not the {len(trees)} trees there are")
    if learner.get("feature_names") or learner.get("feature_types"):
        raise ValueError("feature_names/feature_types: crashcast's boosters have none (model.json names the features)")
    indptr, info = model.get("iteration_indptr"), model.get("tree_info")
    if indptr is not None and (not isinstance(indptr, list) or len(indptr) != len(trees) + 1
                               or any(not isinstance(v, int) for v in indptr) or indptr[0] != 0
                               or indptr[-1] != len(trees) or any(b < a for a, b in pairwise(indptr))):
        raise ValueError("iteration_indptr: not the bounds of the trees there are")
    if not isinstance(info, list) or len(info) != len(trees) or any(c != 0 for c in info):
        raise ValueError("tree_info: a binary classifier's trees all belong to class 0")
    for i, tree in enumerate(trees):
        _xgboost_tree(tree, i, n_features)
        if _xgb_int(tree["tree_param"].get("num_feature", n_features), f"tree {i}: num_feature") != n_features:
            raise ValueError(f"tree {i}: num_feature differs from the model's {n_features}")
    return n_features
