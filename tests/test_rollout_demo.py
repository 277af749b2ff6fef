"""``mlgitops demo --shadow`` end to end: real controller, servers, repository and remote."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.net import free_port

from mlgitops.demo import shadow

pytestmark = pytest.mark.process


def test_the_shadow_demo_catches_the_bad_version_with_no_user_answered_by_it(
        tmp_path: Path) -> None:
    found = shadow.run(workdir=tmp_path, port=free_port())
    assert found["userAnswersByV2"] == 0
    assert found["userAnswersByV1"] > 0 and found["copiesAnsweredByV2"] > 0
    assert found["failedRequests"] == 0
    assert "same label" in found["reason"]
