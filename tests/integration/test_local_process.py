"""`spawn`: a ready emulator in another process, or a clear error when it cannot start."""

from __future__ import annotations

import os

import pytest

from sqlalchemy_dsql.local.process import spawn

pytestmark = pytest.mark.integration


def test_options_reach_the_child_and_it_is_stopped_on_exit() -> None:
    with spawn(cluster_id="spawnedcluster00000000000a", region="eu-west-1") as dsql:
        assert dsql.endpoint == "spawnedcluster00000000000a.dsql.eu-west-1.on.aws"
        assert dsql.region == "eu-west-1"
        assert os.path.exists(dsql.ca_file)
        os.kill(dsql.pid, 0)  # alive
    with pytest.raises(ProcessLookupError):
        os.kill(dsql.pid, 0)


def test_a_child_that_cannot_start_is_reported_with_its_own_words() -> None:
    expected = r"exited before it was ready \(exit code 2\)(.|\n)*invalid int value: 'many'"
    with pytest.raises(RuntimeError, match=expected), spawn(max_rows_per_transaction="many"):
        pass
