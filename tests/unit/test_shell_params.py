"""The project's command line as data (reprise/project_args.py): main.py's ``--steps`` and
``--hydra_options`` words become Hydra's arguments with no shell and no Hydra or OmegaConf syntax
of their own, for a class of hostile values, not one example."""

from __future__ import annotations

import shlex

from step_kit.cli import parse_args

import pytest
from hydra import compose, initialize_config_dir

from reprise.errors import RepriseError
from reprise.project_args import hydra_arguments, quote_value, split_options, steps_override
from support import ROOT

# Shell metacharacters, Hydra and OmegaConf syntax, option-like words: each must stay text.
HOSTILE = [
    '"; touch pwned; echo "',
    "'; touch pwned; '",
    "$(touch pwned)",
    "`touch pwned`",
    "| touch pwned",
    "&& touch pwned",
    "*",
    "a\ntouch pwned",
    ">pwned",
    "$HOME",
    "${oc.env:HOME}",
    "\\${oc.env:HOME}",
    "a,b",
    "[1,2]",
    "x=y",
    "it's",
    "back\\slash\\",
    "\\'",
    "--",
    "-m",
    "",
    " spaced  out ",
]


@pytest.fixture(scope="module")
def compose_with():
    """Compose the project's config with overrides, as main.py's Hydra app would."""
    with initialize_config_dir(str(ROOT / "project" / "config"), version_base="1.3"):
        yield lambda overrides: compose("config", overrides=overrides)


@pytest.mark.parametrize("value", HOSTILE)
def test_steps_reach_the_config_unchanged(compose_with, value: str) -> None:
    assert compose_with([steps_override(value)]).main.steps == value


@pytest.mark.parametrize("value", HOSTILE)
def test_a_quoted_value_in_hydra_options_reaches_the_config_unchanged(
    compose_with, value: str
) -> None:
    # what `python -m reprise run` sends: its overrides joined as shell words
    options = shlex.join(["main.steps=all", f"main.registered_model_name={quote_value(value)}"])
    cfg = compose_with(split_options(options))
    assert cfg.main.registered_model_name == value


@pytest.mark.parametrize(
    "overrides",
    [
        ["-m", "model.max_depth=4,6,8", "model.min_samples_leaf=1,20"],
        ["etl.sample=sample1.parquet", "model.max_depth=6"],
        ["main.registered_model_name='a b, c'", "--cfg", "job"],
        ["etl.sample=my file.parquet"],
    ],
)
def test_overrides_joined_as_shell_words_split_back_the_same(overrides: list[str]) -> None:
    assert split_options(shlex.join(overrides)) == overrides


def test_hydra_options_split_like_shell_words_but_never_expanded() -> None:
    assert split_options("-m  model.max_depth=4,6 'a b' $HOME * `x` $(y)") == [
        "-m",
        "model.max_depth=4,6",
        "a b",
        "$HOME",
        "*",
        "`x`",
        "$(y)",
    ]
    assert split_options("") == []


@pytest.mark.parametrize("text", ["etl.sample='a", 'x="b', "c\\"])
def test_unbalanced_hydra_options_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(RepriseError) as err:
        split_options(text)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("hydra_options could not be split into Hydra overrides")
    assert "Fix: close the quote, or escape a literal quote with a backslash." in message


def test_main_py_arguments_become_hydra_arguments() -> None:
    argv = ["--steps=get_data,basic_cleaning", "--hydra_options=-m model.max_depth=4,6"]
    assert hydra_arguments(argv) == [
        "-m",
        "model.max_depth=4,6",
        "main.steps='get_data,basic_cleaning'",
    ]
    # Hydra's own arguments pass through; without --steps the config's (or an override's) holds
    assert hydra_arguments(["--cfg", "job", "main.steps=get_data"]) == [
        "--cfg",
        "job",
        "main.steps=get_data",
    ]
    assert hydra_arguments(["--steps=", "--hydra_options="]) == ["main.steps=''"]


def test_a_flag_without_its_value_is_refused_in_one_line() -> None:
    with pytest.raises(RepriseError) as err:
        hydra_arguments(["--hydra_options", "-m"])
    assert str(err.value) == (
        "main.py got --hydra_options without a value. "
        "Fix: pass it as --hydra_options=VALUE (with '=')."
    )


@pytest.mark.parametrize("value", ["--", "-h", "--sample", "-1", "", "a b"])
def test_a_component_flag_takes_an_option_like_value(value: str) -> None:
    args = parse_args(ROOT / "components-repo" / "get_data", [f"--sample={value}"])
    assert args.sample == value


def test_a_component_refuses_a_non_number_for_a_number(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(ROOT / "components-repo" / "get_data", ["--sample=x", "--timeout=--"])
    assert (
        "get_data: error: argument --timeout: invalid float value: '--'" in capsys.readouterr().err
    )
