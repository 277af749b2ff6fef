"""The trust policy: which types and functions a model file may make a process load.

skops refuses every type outside its audited defaults (scikit-learn estimators, numpy and
scipy values, primitives and containers); mlgitops also asks for every *function* a file names
(skops trusts numpy ufuncs: a ``FunctionTransformer(np.log1p)`` still needs a person's review).
What that leaves is decided here:

- **never**: builtins and modules that run code or reach the system (``builtins``, ``os``,
  ``posix``, ``subprocess``, ``importlib`` …), lambdas, local functions and names from a
  notebook's ``__main__``. No repository, setting or command admits them.
- **checked** (`CHECKED_TYPES`): tree storage that skops leaves untrusted because
  scikit-learn indexes its node arrays without bounds checks. Admitted by default, and loaded
  only after mlgitops checked every node's indices.
- **default** (`DEFAULT_TYPES`): what scikit-learn's own estimators, transformers, encoders and
  imputers store and carries no code: ``numpy.dtype``, optimizer state, ``Bunch`` …
- **allowed**: exact names a team admits (``mlgitops trust allow TYPE --repo DIR``: the file
  ``mlgitops-trust.yaml`` of the repository's remote) and the controller's operator adds
  (``MLGITOPS_TRUST_ALLOW``), e.g. a team's own transformer class or ``numpy.log1p``.
- anything else is refused, with the command that admits it.

A manifest's ``spec.model.trustedTypes`` can only narrow this: a type is loaded when the
policy admits it *and* the reviewed manifest lists it (publish writes that list).

May NOT: import anything, read settings or files (callers pass the policy and the types).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Modules whose types and functions are never loadable from a model file.
NEVER_MODULES = frozenset({
    "builtins", "__builtin__", "_operator", "os", "posix", "nt", "subprocess", "importlib", "sys", "runpy",
    "pickle", "_pickle", "marshal", "shutil", "socket", "ctypes", "code", "codeop", "pty",
    "multiprocessing", "signal", "webbrowser", "operator", "functools", "io", "pathlib",
    "tempfile", "types", "inspect", "threading", "_thread", "gc", "posixpath", "ntpath",
    "asyncio", "urllib", "http", "ftplib", "smtplib", "telnetlib", "platform", "site",
    "zipimport", "pkgutil", "imp", "dill", "cloudpickle", "joblib", "numpy.f2py",
    "numpy.distutils", "numpy.testing", "numpy.ctypeslib", "numpy.lib.npyio", "__main__",
})

#: Names under `NEVER_MODULES` a team may still admit: a partial call runs only the function
#: it wraps, and that function is itself a name of the file the policy must admit.
ADMISSIBLE = frozenset({"functools.partial"})

#: Tree storage admitted only after mlgitops' own structural checks of its node arrays
#: (`adapters.skops_trees.check_trees`).
CHECKED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
})

#: What scikit-learn's common estimators store that skops leaves untrusted and that carries no
#: code: a data type, plain containers of arrays and numbers, and distance metrics that hold no
#: function (found by dumping each common estimator with skops: tests/test_trust_policy.py).
DEFAULT_TYPES = frozenset({
    "numpy.dtype",  # SimpleImputer, KBinsDiscretizer, ColumnTransformer: a data type
    "sklearn.utils._bunch.Bunch",  # Voting*/Stacking*: a dict of fitted estimators
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # MLP*: arrays and floats
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    *(f"sklearn.metrics._dist_metrics.{m}Distance{bits}"  # KNeighbors*: (p, vec, mat) arrays
      for m in ("Euclidean", "Manhattan", "Chebyshev", "Minkowski") for bits in ("64", "32")),
})

#: What a name is, for sentences (`adapters.skops_files.references` reads it from the file).
DATA_TYPE, FUNCTION, CLASS = "data type", "function", "class"
BUILTIN_FUNCTION = "built-in function"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _module_chain(type_name: str) -> list[str]:
    parts = type_name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def never_loadable(type_name: str) -> bool:
    """True for names under a module of `NEVER_MODULES`, dunder attributes, lambdas and locals."""
    if type_name in ADMISSIBLE:
        return False
    if "<" in type_name or any(p.startswith("__") and p != "__builtin__" for p in type_name.split(".")[1:]):
        return True
    return any(m in NEVER_MODULES for m in _module_chain(type_name))


def valid_name(type_name: str) -> bool:
    """A dotted ``module.Name`` (what skops and ``mlgitops trust allow`` take)."""
    return bool(_NAME.fullmatch(type_name))


def by_default(type_name: str) -> bool:
    """Admitted without any setting (`CHECKED_TYPES` and `DEFAULT_TYPES`)."""
    return type_name in CHECKED_TYPES or type_name in DEFAULT_TYPES


def never_reason(type_name: str) -> str:
    """Why ``type_name`` can never be admitted: a clause to follow the name (", which …")."""
    if "<" in type_name or type_name.startswith("__main__."):
        return ("which is a lambda, a local function or a notebook's own definition: a server "
                "cannot import it, so it can never be admitted; define it in a module installed "
                "beside mlgitops and admit that module's name")
    module = next((m for m in _module_chain(type_name) if m in NEVER_MODULES), type_name)
    return (f"which can run code or reach the system when the model loads (it comes from "
            f"{module}); it can never be admitted, by no setting or command: build the model "
            "without it")


@dataclass(frozen=True)
class Policy:
    """What loads beyond skops' defaults: `CHECKED_TYPES`, `DEFAULT_TYPES` and ``allow``.

    ``allow`` holds the exact names a team or the controller's operator admitted; ``repo`` is
    where ``mlgitops trust allow`` would admit more (shown in refusals, not compared).
    """

    allow: frozenset[str] = field(default_factory=frozenset)
    repo: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        bad = sorted(t for t in self.allow if never_loadable(t))
        if bad:
            raise ValueError(
                "the trust policy cannot admit "
                + "; ".join(f"{t}, {never_reason(t)}" for t in bad)
                + "; remove it from the trust policy file or MLGITOPS_TRUST_ALLOW"
            )

    def admits(self, type_name: str) -> bool:
        if never_loadable(type_name):
            return False
        return by_default(type_name) or type_name in self.allow

    def admit_command(self, names: Iterable[str]) -> str:
        """The command that admits ``names`` for this policy's repository."""
        return f"mlgitops trust allow {' '.join(sorted(names))} --repo {self.repo or 'DIR'}"


DEFAULT = Policy()


@dataclass(frozen=True)
class Refusal:
    """One type that may not load, and the sentence saying why and what to do."""

    type_name: str
    reason: str


def describe(type_name: str, kinds: Mapping[str, str]) -> str:
    """``name (a function)``: the name and what it is, as the model file says."""
    kind = kinds.get(type_name)
    return f"{type_name} (a {kind})" if kind else type_name


def _not_admitted(t: str, *, policy: Policy, kinds: Mapping[str, str]) -> str:
    kind = kinds.get(t)
    function = ("a function: it runs when the model predicts, so it loads only once a person "
                "reviewed it")
    what = {
        FUNCTION: function,
        BUILTIN_FUNCTION: function,
        CLASS: "a class that is not scikit-learn's own storage: its code runs when the model "
               "loads, so it loads only once a person reviewed it",
        DATA_TYPE: "a data type mlgitops does not know",
    }.get(kind or "", "not admitted by default")
    return (f"{t} is {what}; it is not admitted by this repository's trust policy. If you "
            f"reviewed it, admit it with `{policy.admit_command([t])}` (then publish and push "
            "again; nothing else to set)")


def refusals(
    needed: Iterable[str],
    *,
    policy: Policy,
    reviewed: Iterable[str] | None,
    kinds: Mapping[str, str] | None = None,
) -> list[Refusal]:
    """Why the model's untrusted ``needed`` names (and the manifest's list) may not load.

    ``reviewed`` is the manifest's ``trustedTypes`` (None when there is no manifest yet, as
    at publish time: then only the policy is checked); ``kinds`` says what each name is
    (`DATA_TYPE`, `FUNCTION`, `BUILTIN_FUNCTION`, `CLASS`). Empty means the model may load.
    """
    kinds = kinds or {}
    out: list[Refusal] = []
    need = set(needed)
    listed = set(reviewed) if reviewed is not None else None
    for t in sorted(need):
        if never_loadable(t):
            out.append(Refusal(t, f"{describe(t, kinds)}, {never_reason(t)}"))
        elif not policy.admits(t):
            out.append(Refusal(t, _not_admitted(t, policy=policy, kinds=kinds)))
        elif listed is not None and t not in listed:
            out.append(Refusal(t, f"{describe(t, kinds)} is needed by the model and admitted by "
                                  "the trust policy, but spec.model.trustedTypes does not list "
                                  "it; publish writes that list: republish the model (or add "
                                  f"{t} to the list)"))
    for t in sorted(listed or ()):
        if t in need or policy.admits(t):
            continue
        if never_loadable(t):
            out.append(Refusal(t, f"spec.model.trustedTypes lists {t}, {never_reason(t)}"))
        else:
            out.append(Refusal(t, f"spec.model.trustedTypes lists {describe(t, kinds)}, which this "
                                  "repository's trust policy does not admit; if you reviewed it, "
                                  f"admit it with `{policy.admit_command([t])}`"))
    return out


def loadable(needed: Iterable[str], *, policy: Policy, reviewed: Iterable[str]) -> tuple[str, ...]:
    """The exact list to hand skops: needed types the policy admits and the manifest lists."""
    listed = set(reviewed)
    return tuple(sorted(t for t in set(needed) if policy.admits(t) and t in listed))


def render_file(allow: Mapping[str, str]) -> str:
    """The text of a trust policy file admitting ``allow`` (type name -> the reviewer's reason)."""
    import json

    lines = ["# mlgitops trust policy: types and functions models may load beyond the defaults.",
             "# Written by `mlgitops trust allow`; read by publish, validate, the remote's hook",
             "# and `mlgitops up`. `mlgitops trust list --repo DIR` shows the effective policy.",
             "allow:"]
    lines += [f"  - {json.dumps(t)}" for t in sorted(allow)]
    reasons = {t: why for t, why in sorted(allow.items()) if why}
    lines.append("reasons:" + ("" if reasons else " {}"))
    lines += [f"  {json.dumps(t)}: {json.dumps(why)}" for t, why in reasons.items()]
    return "\n".join(lines) + "\n"
