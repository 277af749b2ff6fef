"""The ModelDeployment schema: one schema, clear errors naming the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgitops import errors
from mlgitops.authoring import repository
from mlgitops.core import manifest

DIGEST = "sha256:" + "a" * 64


def doc(**spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"path": "models/credit", "digest": DIGEST}}
    spec.update(spec_changes)
    return {"apiVersion": manifest.API_VERSION, "kind": "ModelDeployment",
            "metadata": {"name": "credit"}, "spec": spec}


def test_minimal_manifest_gets_defaults() -> None:
    dep = manifest.parse(doc(), source="manifests/credit.yaml")
    assert dep.name == "credit" and dep.digest == DIGEST
    assert dep.serving.batching.max_batch_size == 64
    assert dep.drift.action == "revert" and dep.drift.window_rows == 1000


def test_round_trip_through_to_dict() -> None:
    dep = manifest.parse(doc(serving={"replicas": 2, "batching": {"maxBatchSize": 8}}),
                         source="m.yaml")
    assert manifest.parse(dep.to_dict(), source="m.yaml") == dep


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (doc(serving={"replicas": 0}), "spec.serving.replicas", "minimum"),
        (doc(drift={"action": "explode"}), "spec.drift.action", "explode"),
        (doc(model={"path": "models/credit", "digest": "md5:1"}), "spec.model.digest", "does not match"),
        (doc(model={"path": "models/credit"}), "spec.model", "'digest' is a required property"),
        (doc(unknown=1), "spec", "unknown"),
        (doc(model={"path": "models/other", "digest": DIGEST}), "spec.model.path", "credit"),
        (doc(drift={"windowRows": 100, "minRows": 500}), "spec.drift.minRows", "windowRows"),
    ],
)
def test_errors_name_file_and_field(document: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(errors.ManifestError) as err:
        manifest.parse(document, source="manifests/credit.yaml")
    message = str(err.value)
    assert message.startswith("manifests/credit.yaml: field " + field), message
    assert words in message


@pytest.mark.parametrize(("text", "field", "spelled"), [
    ("drift: {datasetShare: .nan}", "spec.drift.datasetShare", ".nan"),
    ("drift: {cooldownSeconds: .inf}", "spec.drift.cooldownSeconds", ".inf"),
    ("drift: {revertPeriodSeconds: .Inf}", "spec.drift.revertPeriodSeconds", ".inf"),
    ("drift: {cooldownSeconds: -.inf}", "spec.drift.cooldownSeconds", "-.inf"),
    ("serving: {batching: {maxDelayMs: .NaN}}", "spec.serving.batching.maxDelayMs", ".nan"),
    ("serving: {workers: .inf}", "spec.serving.workers", ".inf"),
    ("drift: {windowRows: .nan}", "spec.drift.windowRows", ".nan"),
])
def test_only_finite_numbers_pass(text: str, field: str, spelled: str) -> None:
    """YAML's .nan passes every JSON Schema bound (NaN compares false both ways): refused by name."""
    document = doc(**yaml.safe_load(text))
    with pytest.raises(errors.ManifestError) as caught:
        manifest.parse(document, source="manifests/credit.yaml")
    assert str(caught.value).startswith(f"manifests/credit.yaml: field {field}: {spelled} is not "
                                        "a finite number")


def test_seconds_and_counts_have_upper_bounds_in_the_crd_too() -> None:
    crd = manifest.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    drift = crd["properties"]["spec"]["properties"]["drift"]["properties"]
    for name in ("cooldownSeconds", "revertPeriodSeconds", "windowRows", "minRows", "maxReverts"):
        assert "maximum" in drift[name], name
    with pytest.raises(errors.ManifestError, match=r"spec\.drift\.cooldownSeconds"):
        manifest.parse(doc(drift={"cooldownSeconds": 1e300}), source="m.yaml")


def test_not_a_mapping() -> None:
    with pytest.raises(errors.ManifestError, match="expected a ModelDeployment mapping"):
        manifest.parse(["a"], source="manifests/x.yaml")


def test_committed_crd_is_generated_from_the_schema() -> None:
    """manifests/crd/ in this repository equals what `mlgitops crd` prints."""
    root = Path(__file__).resolve().parents[1]
    committed = (root / repository.CRD_PATH).read_text()
    assert committed == repository.crd_yaml()
    crd = yaml.safe_load(committed)
    assert crd["spec"]["names"]["kind"] == "ModelDeployment"
    assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] == \
        manifest.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_example_manifest_in_this_repository_validates() -> None:
    root = Path(__file__).resolve().parents[1]
    examples = sorted((root / "manifests").glob("*.yaml"))
    assert examples, "the repository ships an example manifest"
    for path in examples:
        manifest.parse(yaml.safe_load(path.read_text()), source=str(path))
