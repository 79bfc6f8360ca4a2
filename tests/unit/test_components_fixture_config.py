"""The components repository tests itself with its own copy of the config a pipeline passes it
(components-repo/testing/config): here, in single-repo mode, that copy must be the project's, so
the components are tested with the values the project runs them with."""

from __future__ import annotations

from support import COMPONENTS, ROOT

FIXTURES = COMPONENTS / "testing" / "config"


def test_every_fixture_config_file_is_the_projects_own() -> None:
    copies = sorted(FIXTURES.rglob("*.yaml"))
    assert copies, f"no fixture config under {FIXTURES}"
    differ = [
        str(copy.relative_to(FIXTURES))
        for copy in copies
        if copy.read_bytes()
        != (ROOT / "project" / "config" / copy.relative_to(FIXTURES)).read_bytes()
    ]
    assert not differ, (
        f"components-repo/testing/config differs from project/config in {differ}: copy the "
        "project's files over them (cp project/config/<group>/<file> components-repo/testing/config/<group>/)"
    )


def test_the_fixture_config_covers_what_the_component_tests_read() -> None:
    groups = {path.parent.name for path in FIXTURES.rglob("*.yaml")}
    assert groups >= {"data", "etl", "data_check", "split", "model", "evaluation", "preprocess"}
