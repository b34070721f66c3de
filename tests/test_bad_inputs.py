"""Every bad input of the table in ``benchmarks/bad_inputs.py``, through the real CLI: one line on
stderr that says what is wrong, exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoprune.cli import app
from benchmarks.bad_inputs import CASES, Case, prepare, run_case


def _invoke(args: list[str]) -> tuple[int, list[str]]:
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    return res.exit_code, [x for x in res.stderr.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    prepare(tmp, _invoke)
    return tmp


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_writes_nothing(case: Case, prepared: Path) -> None:
    row = run_case(case, prepared, _invoke)
    assert row["exit"] == 2, row
    assert len(row["lines"]) == 1 and row["lines"][0].startswith("error:"), row
    assert case.phrase in row["lines"][0], row
    assert not row["wrote"], row
