"""The pipeline a project declares: checked whole before anything runs, ordered, selected, drawn."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from reprise import graph
from reprise.errors import RepriseError
from support import ROOT, declared_steps

DEFAULT = yaml.safe_load((ROOT / "project" / "config" / "pipeline" / "default.yaml").read_text())
# the default declaration, its ${...} replaced by plain values: the checks need no config
PLAIN = {
    "steps": {
        name: {k: v for k, v in step.items() if k != "parameters"}
        for name, step in DEFAULT["steps"].items()
    },
    "model": DEFAULT["model"],
}


def _pipeline(declaration: dict[str, Any]) -> graph.Pipeline:
    return graph.declared(OmegaConf.create({"pipeline": declaration}))


def _changed(edit) -> dict[str, Any]:
    declaration = copy.deepcopy(PLAIN)
    edit(declaration["steps"])
    return declaration


def test_the_default_project_declares_its_six_steps_in_order() -> None:
    assert declared_steps() == [
        "get_data",
        "basic_cleaning",
        "data_check",
        "train_val_test_split",
        "train_model",
        "test_model",
    ]
    pipeline = _pipeline(PLAIN)
    assert pipeline.registered_by == "test_model" and pipeline.model_output == "train_model.model"
    split = pipeline.steps["train_val_test_split"]
    assert split.upstream() == ["basic_cleaning", "data_check"]
    assert split.parameter_names(False) == {"input_artifact", "input_sha256"}
    test = pipeline.steps["test_model"]
    assert test.parameter_names(True) == {
        "model",
        "baselines",
        "test_artifact",
        "test_sha256",
        "registered_model_name",
    }


def test_the_order_follows_the_graph_not_the_declaration() -> None:
    reversed_steps = dict(reversed(list(PLAIN["steps"].items())))
    assert _pipeline({"steps": reversed_steps}).names == declared_steps()


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            lambda s: s["basic_cleaning"]["inputs"].update(input="get_data.raw_dat"),
            "takes output 'raw_dat' of step get_data, which declares raw_data, reference_data",
        ),
        (
            lambda s: s["basic_cleaning"]["inputs"].update(input="fetch.raw_data"),
            "takes an output of step 'fetch', which the pipeline does not declare",
        ),
        (
            lambda s: s["basic_cleaning"]["inputs"].update(input="get_data"),
            "is 'get_data', not step.output",
        ),
        (
            lambda s: s["train_val_test_split"].update(after=["data_chek"]),
            "follows step 'data_chek', which the pipeline does not declare",
        ),
        (
            lambda s: s["get_data"].update(inputs={"input": "test_model.predictions"}),
            "form a cycle: get_data -> basic_cleaning -> train_val_test_split -> train_model -> "
            "test_model -> get_data",
        ),
        (
            lambda s: s["get_data"].update(inputs={"input": "get_data.raw_data"}),
            "form a cycle: get_data -> get_data",
        ),
        (lambda s: s["get_data"].update(outptus=["x"]), "Step get_data has unknown key(s) outptus"),
        (
            lambda s: s["test_model"]["inputs"].update(
                model={"from": "train_model.model", "as": 1}
            ),
            "Input model of step test_model is neither step.output nor",
        ),
        (
            lambda s: s["test_model"]["inputs"].update(
                model={"from": "train_model.model", "pass": "x"}
            ),
            "pass must be artifact or uri",
        ),
    ],
)
def test_a_wrong_declaration_is_refused_in_one_line_naming_it(edit, said: str) -> None:
    with pytest.raises(RepriseError) as refused:
        _pipeline(_changed(edit))
    assert said in str(refused.value)
    assert "\n" not in str(refused.value) and " Fix: " in str(refused.value)


BAD_NAMES = ["a'b", "x; touch y", "../up", "2nd", "", "a b", "é", "x" * 101]


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        (where, bad)
        for where in ("step", "output", "component", "parameter")
        for bad in BAD_NAMES
        if (where, bad) != ("component", "")  # no component: the step's name
    ],
)
def test_a_name_that_is_not_a_name_is_refused(where: str, bad: str) -> None:
    def edit(steps: dict[str, Any]) -> None:
        if where == "step":
            steps[bad] = steps.pop("get_data")
            steps["basic_cleaning"]["inputs"]["input"] = f"{bad}.raw_data"
            steps["data_check"]["inputs"]["reference"]["from"] = f"{bad}.reference_data"
        elif where == "output":
            steps["test_model"]["outputs"] = [bad]
        elif where == "component":
            steps["get_data"]["component"] = bad
        else:
            steps["get_data"]["parameters"] = {bad: 1}

    with pytest.raises(RepriseError) as refused:
        _pipeline(_changed(edit))
    assert "is not a name" in str(refused.value) or "not step.output" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_no_declaration_says_where_to_declare() -> None:
    with pytest.raises(RepriseError, match="declares no pipeline"):
        graph.declared(OmegaConf.create({"main": {}}))


def test_a_model_registered_by_an_unknown_step_is_refused() -> None:
    declaration = copy.deepcopy(PLAIN)
    declaration["model"]["registered_by"] = "test_modle"
    with pytest.raises(RepriseError, match="registered_by names step 'test_modle'"):
        _pipeline(declaration)


def test_selection_takes_declared_names_in_running_order() -> None:
    pipeline = _pipeline(PLAIN)
    assert pipeline.select("test_model, get_data") == ["get_data", "test_model"]
    assert pipeline.select("all") == pipeline.names
    with pytest.raises(
        RepriseError, match="Unknown step.s. train. Fix: choose from: all, get_data"
    ):
        pipeline.select("train")
    assert pipeline.needed_from_earlier_runs(["train_model", "test_model"]) == [
        "train_val_test_split"
    ]


def test_independent_steps_share_a_wave() -> None:
    def two_models(steps: dict[str, Any]) -> None:
        steps["train_forest"] = {**steps["train_model"], "component": "train_model"}
        steps["check_twice"] = {**steps["data_check"], "component": "data_check"}

    pipeline = _pipeline(_changed(two_models))
    assert pipeline.waves(pipeline.names) == [
        ["get_data"],
        ["basic_cleaning"],
        ["data_check", "check_twice"],
        ["train_val_test_split"],
        ["train_model", "train_forest"],
        ["test_model"],
    ]
    assert pipeline.waves(["train_model", "train_forest"]) == [["train_model", "train_forest"]]


def test_parameters_are_checked_against_the_component(tmp_path: Path) -> None:
    pipeline = _pipeline(PLAIN)
    mlproject = ROOT / "components-repo" / "train_val_test_split" / "MLproject"
    step = pipeline.steps["train_val_test_split"]
    needed = step.parameter_names(False) | {"target", "val_size", "test_size", "random_seed"}
    graph.check_parameters(step, mlproject, needed)  # what the default declares: accepted
    with pytest.raises(RepriseError, match="does not give parameter.s. target, which component"):
        graph.check_parameters(step, mlproject, needed - {"target"})
    with pytest.raises(RepriseError, match="gives parameter.s. seed that component"):
        graph.check_parameters(step, mlproject, needed | {"seed"})
    other = graph.Step(**{**step.__dict__, "entry_point": "nope"})
    with pytest.raises(RepriseError, match="has no entry point 'nope'"):
        graph.check_parameters(other, mlproject, needed)
    with pytest.raises(RepriseError, match="cannot read"):
        graph.check_parameters(step, tmp_path / "MLproject", needed)


def test_parameters_pass_as_mlflow_takes_them() -> None:
    step = graph.Step("s", "s", "main", {"a": {"b": 1, "a": [2]}, "n": None, "x": 3}, (), (), ())
    assert step.parameter_values() == {"a": '{"a": [2], "b": 1}', "n": "", "x": 3}
    given = graph.Input("model", "t", "model", uri_only=True)
    assert given.parameters("runs:/1/model", "abc") == {"model": "runs:/1/model"}
    table = graph.Input("train", "t", "train_data")
    assert table.parameters("u", "d") == {"train_artifact": "u", "train_sha256": "d"}


def test_the_graph_prints_as_text_and_mermaid() -> None:
    pipeline = _pipeline(PLAIN)
    text = graph.as_text(pipeline)
    assert "train_val_test_split\n  <- input: basic_cleaning.clean_data\n  after data_check" in text
    assert "  <- reference: get_data.reference_data, optional" in text
    assert text.endswith("model: train_model.model, registered by test_model")
    mermaid = graph.as_mermaid(pipeline)
    assert mermaid.startswith("flowchart TD\n")
    assert "  basic_cleaning -->|clean_data| train_val_test_split" in mermaid
    assert "  data_check -.->|after| train_val_test_split" in mermaid


def test_the_platform_names_no_step_data_set_or_model_of_the_project() -> None:
    """What the example project calls its steps, data and model is the project's alone."""
    import re

    pattern = re.compile(
        r"get_data|basic_cleaning|data_check|train_val_test_split|train_model|test_model|adult|income"
    )
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "reprise").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_model_steps_and_the_sources_come_from_the_declaration() -> None:
    pipeline = _pipeline(PLAIN)
    assert pipeline.model_steps() == {"train_model", "test_model"}
    assert pipeline.sources() == {"get_data"}
    undeclared = copy.deepcopy(PLAIN)
    del undeclared["model"]
    assert _pipeline(undeclared).model_steps() == set(declared_steps())
