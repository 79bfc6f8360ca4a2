"""The release commands' tables: built from data, as the command line prints them."""

from __future__ import annotations

from reprise.report import (
    Comparison,
    ReleaseLine,
    ReleaseListing,
    Verification,
    releases_lines,
    verification_lines,
)


def _verification(same: bool, registry_unchanged: bool | None) -> Verification:
    rows = [
        Comparison("commit get_data", "a" * 40, "a" * 40, True),
        Comparison("metric test.roc_auc", "0.91", "0.91" if same else "0.9", same),
    ]
    return Verification("1.2.0", "run1", 12.4, rows, "model", registry_unchanged)


def test_verification_table_marks_the_difference_and_counts() -> None:
    lines = verification_lines(_verification(same=False, registry_unchanged=None))
    assert lines[1] == "Release 1.2.0 against pipeline run run1 (12 s)"
    assert lines[2].split() == ["what", "same", "expected", "->", "actual"]
    assert lines[4] == "metric test.roc_auc  NO    0.91 -> 0.9"
    assert lines[-1] == "1 of 2 identical."


def test_verification_says_the_registry_stayed_only_after_a_rerun_that_left_it() -> None:
    said = "The registry is as it was: the rerun registered no model and moved no alias of model."
    assert verification_lines(_verification(True, registry_unchanged=True))[-1] == said
    assert said not in verification_lines(_verification(True, registry_unchanged=False))
    assert said not in verification_lines(_verification(True, registry_unchanged=None))
    assert _verification(True, None).different == []


def test_releases_table() -> None:
    line = ReleaseLine("1.0.0", "2026-01-02", {"test.roc_auc": 0.91234}, "model", "3", True, "")
    listing = ReleaseListing(["test.roc_auc", "missing"], [line], remote=False, origin_only=False)
    header, row = releases_lines(listing)
    assert header.split() == ["version", "date", "test.roc_auc", "missing", "model", "prod"]
    assert row.split() == ["1.0.0", "2026-01-02", "0.9123", "nan", "model", "v3", "yes"]


def test_releases_table_with_origin() -> None:
    line = ReleaseLine("1.0.0", "2026-01-02", {}, "model", "3", False, "MOVED on origin")
    lines = releases_lines(ReleaseListing([], [line], remote=True, origin_only=True))
    assert lines[0].rstrip().endswith("where")
    assert lines[1].endswith("MOVED on origin")
    assert lines[2] == "A release on origin only is fetched when named: make verify VERSION=X.Y.Z"


def test_no_releases() -> None:
    assert releases_lines(ReleaseListing([], [], remote=False, origin_only=False)) == [
        "No releases yet: make release PART=major"
    ]
