"""One trust setting: scikit-learn's own estimators publish with none, callables stay refused,
a team admits more in one file that publish, the remote's hook, validate and `up` all read."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import skops.io
import yaml
from support.net import free_port
from support.waits import wait_until

import mlgitops
from mlgitops import errors, settings
from mlgitops.adapters import git, mlflow_models, skops_files, skops_trees
from mlgitops.controller import run
from mlgitops.core import trust

pytestmark = pytest.mark.fast

CLI = str(Path(sys.executable).parent / "mlgitops")


@pytest.fixture(autouse=True)
def _no_trust_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLGITOPS_TRUST_ALLOW", raising=False)
    monkeypatch.delenv("MLGITOPS_TRUST_POLICY", raising=False)


def _data(n: int = 120) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n) + 3.0,
                      "c": rng.normal(size=n)})
    y = 2 * x.a - x.b + rng.normal(scale=0.1, size=n)
    return x, y.to_numpy(), (y > y.median()).to_numpy().astype(int)


def _with_missing(x: pd.DataFrame) -> pd.DataFrame:
    return x.assign(a=x.a.mask(x.index % 10 == 0))


def _cases() -> dict[str, tuple[Callable[[], Any], str]]:
    """name -> (estimator factory, target: r(egression), c(lassification), or t(ransformer))."""
    from sklearn import ensemble as E
    from sklearn import impute as I
    from sklearn import linear_model as L
    from sklearn import naive_bayes, neighbors, neural_network, svm, tree
    from sklearn import preprocessing as P

    return {
        "StandardScaler": (P.StandardScaler, "t"), "MinMaxScaler": (P.MinMaxScaler, "t"),
        "RobustScaler": (P.RobustScaler, "t"), "MaxAbsScaler": (P.MaxAbsScaler, "t"),
        "PolynomialFeatures": (P.PolynomialFeatures, "t"),
        "KBinsDiscretizer": (lambda: P.KBinsDiscretizer(n_bins=3), "t"),
        "SimpleImputer-mean": (I.SimpleImputer, "t-missing"),
        "SimpleImputer-most_frequent": (lambda: I.SimpleImputer(strategy="most_frequent"), "t-missing"),
        "SimpleImputer-constant": (lambda: I.SimpleImputer(strategy="constant", fill_value=0.0), "t-missing"),
        "KNNImputer": (I.KNNImputer, "t-missing"),
        "LogisticRegression": (L.LogisticRegression, "c"), "Ridge": (L.Ridge, "r"),
        "LinearRegression": (L.LinearRegression, "r"), "Lasso": (L.Lasso, "r"),
        "ElasticNet": (L.ElasticNet, "r"), "SGDClassifier": (L.SGDClassifier, "c"),
        "SGDRegressor": (L.SGDRegressor, "r"), "SVC": (svm.SVC, "c"), "SVR": (svm.SVR, "r"),
        "KNeighborsClassifier": (neighbors.KNeighborsClassifier, "c"),
        "KNeighborsRegressor": (neighbors.KNeighborsRegressor, "r"),
        "KNeighbors-ball_tree-manhattan": (
            lambda: neighbors.KNeighborsClassifier(algorithm="ball_tree", p=1), "c"),
        "KNeighbors-kd_tree-minkowski3": (
            lambda: neighbors.KNeighborsRegressor(algorithm="kd_tree", p=3), "r"),
        "DecisionTreeClassifier": (tree.DecisionTreeClassifier, "c"),
        "DecisionTreeRegressor": (tree.DecisionTreeRegressor, "r"),
        "RandomForestClassifier": (lambda: E.RandomForestClassifier(n_estimators=3), "c"),
        "RandomForestRegressor": (lambda: E.RandomForestRegressor(n_estimators=3), "r"),
        "ExtraTreesClassifier": (lambda: E.ExtraTreesClassifier(n_estimators=3), "c"),
        "ExtraTreesRegressor": (lambda: E.ExtraTreesRegressor(n_estimators=3), "r"),
        "GradientBoostingClassifier": (lambda: E.GradientBoostingClassifier(n_estimators=3), "c"),
        "GradientBoostingRegressor": (lambda: E.GradientBoostingRegressor(n_estimators=3), "r"),
        "HistGradientBoostingClassifier": (lambda: E.HistGradientBoostingClassifier(max_iter=5), "c"),
        "HistGradientBoostingRegressor": (lambda: E.HistGradientBoostingRegressor(max_iter=5), "r"),
        "GaussianNB": (naive_bayes.GaussianNB, "c"),
        "MLPClassifier": (lambda: neural_network.MLPClassifier(max_iter=30), "c"),
        "MLPRegressor": (lambda: neural_network.MLPRegressor(max_iter=30), "r"),
        "VotingRegressor": (lambda: E.VotingRegressor([("r", L.Ridge()), ("t", tree.DecisionTreeRegressor())]), "r"),
    }


def _model(kind: str, make: Callable[[], Any]) -> tuple[Any, pd.DataFrame]:
    """A fitted model using the estimator: a transformer gets a Ridge after it."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    x, yr, yc = _data()
    if kind.startswith("t"):
        x = _with_missing(x) if kind == "t-missing" else x
        return make_pipeline(make(), Ridge()).fit(x, yr), x
    return make().fit(x, yc if kind == "c" else yr), x


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", sorted(_cases()))
def test_scikit_learns_own_estimators_publish_with_no_trust_setting(name: str, tmp_path: Path) -> None:
    make, kind = _cases()[name]
    model, x = _model(kind, make)
    probe = tmp_path / "probe.skops"
    skops.io.dump(model, probe)
    untrusted = skops.io.get_untrusted_types(file=probe)
    assert all(trust.DEFAULT.admits(t) for t in untrusted), untrusted
    _, types = mlflow_models.save(model, tmp_path / "m", example=x, policy=trust.DEFAULT)
    assert set(untrusted) <= set(types)
    loaded = mlflow_models.load(tmp_path / "m", trusted_types=types, policy=trust.DEFAULT)
    np.testing.assert_allclose(loaded.estimator.predict(x), model.predict(x))


@pytest.mark.filterwarnings("ignore")
def test_encoders_imputers_and_column_transformers_on_strings_need_nothing(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, OrdinalEncoder

    x, yr, _ = _data()
    x = x.assign(s=np.where(x.a > 0, "up", "down").astype(object))
    x.loc[x.index % 7 == 0, "s"] = None
    for strings in (
        make_pipeline(SimpleImputer(strategy="most_frequent", missing_values=None),
                      OneHotEncoder(handle_unknown="ignore")),
        make_pipeline(SimpleImputer(strategy="constant", fill_value="none", missing_values=None),
                      OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)),
    ):
        model = make_pipeline(ColumnTransformer([("num", "passthrough", ["a", "b", "c"]),
                                                 ("s", strings, ["s"])]), Ridge()).fit(x, yr)
        _, types = mlflow_models.save(model, tmp_path / "m", example=x, policy=trust.DEFAULT)
        assert types == ("numpy.dtype",)
        loaded = mlflow_models.load(tmp_path / "m", trusted_types=types, policy=trust.DEFAULT)
        np.testing.assert_allclose(loaded.estimator.predict(x), model.predict(x))
    encoder = LabelEncoder().fit(np.where(yr > 0, "p", "n"))
    skops.io.dump(encoder, tmp_path / "le.skops")
    needed, kinds = mlflow_models.needs(tmp_path / "le.skops")
    assert trust.refusals(needed, policy=trust.DEFAULT, reviewed=None, kinds=kinds) == []


@pytest.mark.parametrize(("func", "name", "expected"), [
    (np.log1p, "numpy.log1p", r"numpy\.log1p is a function.*`mlgitops trust allow numpy\.log1p --repo DIR`"),
    (exec, "builtins.exec", r"builtins\.exec \(a built-in function\), which can run code.*never be admitted"),
    (lambda v: v, "<lambda>", r"<lambda> \(a function\), which is a lambda.*can never be admitted"),
])
def test_callables_stay_refused(func: Any, name: str, expected: str, tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, yr, _ = _data()
    model = make_pipeline(FunctionTransformer(func if name != "builtins.exec" else None), Ridge()).fit(x.abs(), yr)
    if name == "builtins.exec":  # fitted with the identity, then the code-running function
        model.steps[0][1].func = exec
    with pytest.raises(errors.ModelError, match=expected) as err:
        mlflow_models.save(model, tmp_path / "m", example=x.abs(), policy=trust.DEFAULT)
    assert "remove" not in str(err.value)
    assert not (tmp_path / "m").exists()


def test_a_team_can_admit_a_function_but_never_code_that_reaches_the_system() -> None:
    assert trust.Policy(allow=frozenset({"numpy.log1p"})).admits("numpy.log1p")
    assert not trust.DEFAULT.admits("numpy.log1p")
    for bad in ("builtins.exec", "posix.system", "__main__.helper", "mod.<locals>.f", "os.path.join"):
        with pytest.raises(ValueError, match="can never be admitted"):
            trust.Policy(allow=frozenset({bad}))
    assert trust.Policy(allow=frozenset({"functools.partial"})).admits("functools.partial")
    assert not trust.DEFAULT.admits("functools.partial")


def _rewrite_member(path: Path, member: str, array: np.ndarray) -> None:
    with zipfile.ZipFile(path) as src:
        items = {i.filename: src.read(i.filename) for i in src.infolist()}
    buf = __import__("io").BytesIO()
    np.save(buf, array, allow_pickle=False)
    items[member] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as out:
        for k, v in items.items():
            out.writestr(k, v)


def _tree_state(path: Path) -> list[Any]:
    schema = json.loads(zipfile.ZipFile(path).read("schema.json"))
    found = [n for n in skops_files.walk(schema) if n.get("__class__") == "KDTree"]
    assert len(found) == 1
    return list(found[0]["content"]["content"])


@pytest.mark.parametrize("damage", ["idx_array", "node_data"])
def test_a_tampered_kd_tree_is_refused_before_it_loads(damage: str, tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsRegressor

    x, yr, _ = _data()
    model = KNeighborsRegressor(algorithm="kd_tree").fit(x, yr)
    path = tmp_path / "knn.skops"
    skops.io.dump(model, path)
    assert skops_trees.check_trees(path) == 1
    state = _tree_state(path)
    if damage == "idx_array":
        idx = np.arange(len(x), dtype=np.intp)
        idx[3] = 10**9  # a read far outside the training data
        _rewrite_member(path, state[1]["file"], idx)
        expected = "idx_array points outside"
    else:
        with zipfile.ZipFile(path) as z:
            nodes = np.load(__import__("io").BytesIO(z.read(state[2]["file"])))
        nodes["is_leaf"][-1] = 0  # the last node claims children past the end of the array
        _rewrite_member(path, state[2]["file"], nodes)
        expected = "points outside the tree"
    with pytest.raises(errors.ModelError, match=expected):
        mlflow_models.check_types(path, policy=trust.DEFAULT, reviewed=None, source="knn")


# end to end: real git, the real hook, the CLI ---------------------------------------------------

def housing(n: int = 600) -> tuple[Any, pd.DataFrame]:
    """The issue's model: imputed and scaled numbers, a one-hot string column, Ridge."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "sqft": rng.normal(1800, 400, n), "bedrooms": rng.integers(1, 6, n).astype(float),
        "age": rng.uniform(0, 80, n), "lot_size": rng.normal(6000, 1500, n),
        "neighborhood": rng.choice(["north", "south", "east", "west"], n),
    })
    frame["price"] = 150 * frame.sqft + 8000 * frame.bedrooms - 500 * frame.age + rng.normal(0, 1e4, n)
    frame.loc[rng.random(n) < 0.1, "lot_size"] = np.nan
    numeric = ["sqft", "bedrooms", "age", "lot_size"]
    model = make_pipeline(
        ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), ["neighborhood"])]),
        Ridge())
    return model.fit(frame.drop(columns="price"), frame.price), frame


def _remote_head(repo: Path) -> str:
    return git.text(repo, "ls-remote", "origin", "refs/heads/main").split()[0]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, as one line (the terminal wraps long sentences)."""
    return " ".join((proc.stdout + proc.stderr).split())


@pytest.mark.process
def test_the_housing_pipeline_publishes_through_the_hook_and_validates_with_no_trust_flag(
    repo: Path,
) -> None:
    model, frame = housing()
    sha = mlgitops.publish(model, frame, name="housing", repo=repo, target="price", quiet=True)
    assert _remote_head(repo) == sha  # the remote's real pre-receive hook accepted it
    doc = yaml.safe_load((repo / "manifests/housing.yaml").read_text())
    assert doc["spec"]["model"]["trustedTypes"] == ["numpy.dtype"]
    ok = _cli("validate", str(repo))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid: housing" in ok.stdout + ok.stderr


@pytest.mark.process
def test_a_team_type_is_admitted_once_for_publish_hook_validate_and_up(repo: Path) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, yr, _ = _data()
    x = x.abs()
    model = make_pipeline(FunctionTransformer(np.log1p), Ridge()).fit(x, yr)
    frame = x.assign(y=yr)
    bare = Path(git.remote_url(repo) or "")
    # refused, naming the function and the exact command for this repository
    with pytest.raises(errors.ModelError) as err:
        mlgitops.publish(model, frame, name="logged", repo=repo, target="y", quiet=True)
    assert f"`mlgitops trust allow numpy.log1p --repo {repo}`" in str(err.value)
    assert "numpy.log1p is a function" in str(err.value)

    # the publisher's own environment is not the remote's policy: the hook refuses, and says how
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLGITOPS_TRUST_ALLOW", "numpy.log1p")
        with pytest.raises(errors.GitError) as refused:
            mlgitops.publish(model, frame, name="logged", repo=repo, target="y", quiet=True)
    text = str(refused.value)
    assert f"mlgitops trust allow numpy.log1p --repo {bare}" in text, text
    assert "numpy.log1p (a function)" in text
    assert "remove" not in text

    allowed = _cli("trust", "allow", "numpy.log1p", "--repo", str(repo), "--reason", "a ufunc")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert (bare / settings.REMOTE_TRUST_FILE).is_file()
    git.push(repo)  # the commit the hook refused goes through now, no variable set
    sha = git.text(repo, "rev-parse", "HEAD")
    assert _remote_head(repo) == sha
    again = mlgitops.publish(model, frame, name="logged", repo=repo, target="y", quiet=True)
    assert again == sha  # identical content: nothing to do
    ok = _cli("validate", str(repo))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    listing = _cli("trust", "list", "--repo", str(repo), "--json")
    rows = {r["type"]: r for r in json.loads(listing.stdout)["admitted"]}
    assert rows["numpy.log1p"]["reason"] == "a ufunc"
    assert rows["numpy.dtype"]["source"].startswith("default")
    never = _cli("trust", "allow", "builtins.exec", "--repo", str(repo))
    assert never.returncode == 1 and "can never be admitted" in _said(never)

    # the controller reads the same file: it serves the model with no variable set
    cfg = settings.controller(repo, port=free_port(), poll_seconds=1.0, monitor=False)
    assert cfg.trust.admits("numpy.log1p")
    with run.running(cfg) as ctl:
        def served() -> bool:
            r = httpx.post(f"{ctl.base_url}/models/logged/invocations",
                           json={"dataframe_records": x.head(3).to_dict(orient="records")}, timeout=10)
            return r.status_code == 200
        wait_until(served, timeout=120, what="the team-admitted model serving")
        r = httpx.post(f"{ctl.base_url}/models/logged/invocations",
                       json={"dataframe_records": x.head(3).to_dict(orient="records")}, timeout=10)
        np.testing.assert_allclose(r.json()["predictions"], model.predict(x.head(3)))


@pytest.mark.process
def test_a_hosted_remote_gets_a_local_copy_and_the_instructions(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    git.run(work, "init", "-q")
    git.run(work, "remote", "add", "origin", "ssh://git@git.example.com/ml/models.git")
    out = _cli("trust", "allow", "numpy.log1p", "--repo", str(work))
    assert out.returncode == 0, out.stderr
    assert "on the Git host" in _said(out) and "mlgitops-trust.yaml" in _said(out)
    assert settings.trust_policy(repo=work).admits("numpy.log1p")
    assert (work / ".git" / settings.REMOTE_TRUST_FILE).is_file()
    plain = tmp_path / "plain"
    plain.mkdir()
    bad = _cli("trust", "allow", "numpy.log1p", "--repo", str(plain))
    assert bad.returncode == 1 and "not a model repository" in _said(bad)
