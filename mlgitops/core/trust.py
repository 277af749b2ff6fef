"""The trust policy: which types a model file may make a process load.

skops already refuses every type outside its audited defaults (scikit-learn estimators, numpy
and scipy values, primitives and containers); what it reports as *untrusted* is decided here:

- **never**: builtins and modules that run code or reach the system (``builtins``, ``os``,
  ``posix``, ``subprocess``, ``importlib`` …). No repository and no setting admits them.
- **checked**: tree storage that skops leaves untrusted because scikit-learn indexes its node
  arrays without bounds checks. Admitted only after mlgitops checked every node's indices.
- **allowed**: exact type names the *operator of the controller* admits in settings
  (``MLGITOPS_TRUST_ALLOW`` or a policy file), e.g. a team's own transformer class.
- anything else is refused.

A manifest's ``spec.model.trustedTypes`` can only narrow this: a type is loaded when the
policy admits it *and* the reviewed manifest lists it.

May NOT: import anything, read settings or files (callers pass the policy and the types).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: Modules whose types and functions are never loadable from a model file.
NEVER_MODULES = frozenset({
    "builtins", "__builtin__", "_operator", "os", "posix", "nt", "subprocess", "importlib", "sys", "runpy",
    "pickle", "_pickle", "marshal", "shutil", "socket", "ctypes", "code", "codeop", "pty",
    "multiprocessing", "signal", "webbrowser", "operator", "functools", "io", "pathlib",
    "tempfile", "types", "inspect", "threading", "_thread", "gc", "posixpath", "ntpath",
    "asyncio", "urllib", "http", "ftplib", "smtplib", "telnetlib", "platform", "site",
    "zipimport", "pkgutil", "imp", "dill", "cloudpickle", "joblib", "numpy.f2py",
    "numpy.distutils", "numpy.testing", "numpy.ctypeslib", "numpy.lib.npyio",
})

#: Types admitted only after mlgitops' own structural checks of their node arrays.
CHECKED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
})


def _module_chain(type_name: str) -> list[str]:
    parts = type_name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def never_loadable(type_name: str) -> bool:
    """True for names under a module of `NEVER_MODULES` (and any dunder attribute)."""
    if any(part.startswith("__") and part != "__builtin__" for part in type_name.split(".")[1:]):
        return True
    return any(m in NEVER_MODULES for m in _module_chain(type_name))


@dataclass(frozen=True)
class Policy:
    """What the controller's operator admits beyond skops' defaults (exact type names)."""

    allow: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        bad = sorted(t for t in self.allow if never_loadable(t))
        if bad:
            raise ValueError(
                f"the trust policy cannot admit {', '.join(bad)}: these can run code or reach the "
                "system when a model loads; remove them from MLGITOPS_TRUST_ALLOW / the policy file"
            )

    def admits(self, type_name: str) -> bool:
        if never_loadable(type_name):
            return False
        return type_name in CHECKED_TYPES or type_name in self.allow


DEFAULT = Policy()


@dataclass(frozen=True)
class Refusal:
    """One type that may not load, and the sentence saying why and what to do."""

    type_name: str
    reason: str


def refusals(
    needed: Iterable[str],
    *,
    policy: Policy,
    reviewed: Iterable[str] | None,
) -> list[Refusal]:
    """Why the model's untrusted ``needed`` types (and the manifest's list) may not load.

    ``reviewed`` is the manifest's ``trustedTypes`` (None when there is no manifest yet, as
    at publish time: then only the policy is checked). Empty means the model may load.
    """
    out: list[Refusal] = []
    need = set(needed)
    listed = set(reviewed) if reviewed is not None else None
    for t in sorted(need):
        if never_loadable(t):
            out.append(Refusal(t, f"{t} can run code or reach the system when the model loads; "
                                  "no setting admits it: rebuild the model without it"))
        elif not policy.admits(t):
            out.append(Refusal(t, f"{t} is not admitted by the controller's trust policy; if you "
                                  "reviewed its code, the controller's operator can admit it "
                                  "(MLGITOPS_TRUST_ALLOW or the trust policy file), then list it "
                                  "in spec.model.trustedTypes"))
        elif listed is not None and t not in listed:
            out.append(Refusal(t, f"{t} is needed by the model but spec.model.trustedTypes does "
                                  "not list it; review it and add it to the manifest"))
    for t in sorted(listed or ()):
        if t in need or policy.admits(t):
            continue
        why = ("can run code or reach the system when a model loads, and no setting admits it"
               if never_loadable(t) else "is not admitted by the controller's trust policy")
        out.append(Refusal(t, f"spec.model.trustedTypes lists {t}, which {why}; remove it from "
                              "the manifest"))
    return out


def loadable(needed: Iterable[str], *, policy: Policy, reviewed: Iterable[str]) -> tuple[str, ...]:
    """The exact list to hand skops: needed types the policy admits and the manifest lists."""
    listed = set(reviewed)
    return tuple(sorted(t for t in set(needed) if policy.admits(t) and t in listed))
