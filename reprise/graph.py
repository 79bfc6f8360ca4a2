"""The pipeline a project declares (config group ``pipeline``): its steps, what flows between them,
and the order they run in. Checked whole before anything runs; the platform knows no step by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from reprise import paths
from reprise.errors import RepriseError
from reprise.plain_config import plain_dict

DECLARATION = "project/config/pipeline/"
STEP_KEYS = {"component", "entry_point", "inputs", "after", "parameters", "outputs"}
INPUT_KEYS = {"from", "optional", "pass"}
# What the platform adds to the parameters of the step that registers the model.
REGISTERED_MODEL_PARAMETER = "registered_model_name"


@dataclass(frozen=True)
class Input:
    """One input of a step: ``parameter`` takes output ``output`` of step ``step``."""

    parameter: str
    step: str
    output: str
    optional: bool = False
    uri_only: bool = False  # pass the URI alone as ``parameter`` (no _artifact / _sha256 pair)

    @property
    def reference(self) -> str:
        return f"{self.step}.{self.output}"

    def parameters(self, uri: str, sha256: str) -> dict[str, str]:
        """The component parameters this input becomes."""
        if self.uri_only:
            return {self.parameter: uri}
        return {f"{self.parameter}_artifact": uri, f"{self.parameter}_sha256": sha256}


@dataclass(frozen=True)
class Step:
    name: str
    component: str
    entry_point: str
    parameters: dict[str, Any]
    inputs: tuple[Input, ...]
    after: tuple[str, ...]
    outputs: tuple[str, ...]

    def upstream(self) -> list[str]:
        """The steps this one must follow: those whose outputs it takes, and its ``after``."""
        return list(dict.fromkeys([*(i.step for i in self.inputs), *self.after]))

    def parameter_names(self, registers: bool) -> set[str]:
        """Every parameter the step gives its component; ``registers``: it registers the model."""
        names = set(self.parameters) | {n for i in self.inputs for n in i.parameters("", "")}
        return names | ({REGISTERED_MODEL_PARAMETER} if registers else set())

    def parameter_values(self) -> dict[str, Any]:
        """The declared parameters as MLflow passes them: a mapping or list as JSON (keys
        sorted), null as an empty string."""
        return {name: _as_parameter(value) for name, value in self.parameters.items()}


@dataclass(frozen=True)
class Pipeline:
    """The declared steps, in the order they run (every step after those it follows; between
    independent steps, the order of the declaration)."""

    steps: dict[str, Step]
    model_output: str  # "step.output" of the model this pipeline makes, or ""
    registered_by: str  # the step that registers it, or ""

    @property
    def names(self) -> list[str]:
        return list(self.steps)

    def sources(self) -> set[str]:
        """The steps that take no input: where the pipeline's data comes in."""
        return {name for name, step in self.steps.items() if not step.inputs}

    def model_steps(self) -> set[str]:
        """The steps that make and register the model (every step when none is declared): their
        scores are the pipeline's."""
        steps = {self.model_output.partition(".")[0], self.registered_by} - {""}
        return steps or set(self.steps)

    def select(self, spec: str) -> list[str]:
        """``all`` or a comma-separated list of declared step names, in running order."""
        wanted = [s.strip() for s in str(spec).split(",") if s.strip()]
        if not wanted or wanted == ["all"]:
            return self.names
        unknown = [s for s in wanted if s not in self.steps]
        if unknown:
            raise RepriseError(
                f"Unknown step(s) {', '.join(unknown)}.",
                f"choose from: all, {', '.join(self.names)} (comma-separated).",
            )
        return [s for s in self.names if s in wanted]

    def waves(self, selected: list[str]) -> list[list[str]]:
        """The selected steps in groups that may run at the same time: each group needs only
        steps of earlier groups (or steps left out, whose latest finished runs serve)."""
        done: set[str] = set()
        left = [s for s in self.names if s in selected]
        groups = []
        while left:
            ready = [s for s in left if all(u in done or u not in left for u in self._up(s))]
            groups.append(ready)
            done |= set(ready)
            left = [s for s in left if s not in ready]
        return groups

    def _up(self, step: str) -> list[str]:
        return self.steps[step].upstream()

    def needed_from_earlier_runs(self, selected: list[str]) -> list[str]:
        """Steps left out whose outputs a selected step takes (their latest finished runs)."""
        needed = {u for s in selected for u in self._up(s) if u not in selected}
        return [s for s in self.names if s in needed]


def project_config(root: Path = paths.ROOT, overrides: Sequence[str] = ()) -> DictConfig:
    """The project's config as committed (with Hydra ``overrides``), composed by Hydra; a bad
    override is a RepriseError quoting Hydra, credentials scrubbed (Hydra echoes the override)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from reprise.credentials import scrub

    try:
        with initialize_config_dir(str(root / "project" / "config"), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        cause = f" ({str(err.__cause__).splitlines()[0]})" if err.__cause__ else ""
        raise RepriseError(scrub(f"{' '.join(str(err).split())}{cause}")) from None


def declared(cfg: DictConfig) -> Pipeline:
    """The pipeline of ``cfg`` (its ``pipeline`` group), checked: every step's keys, inputs that
    name a declared output of a declared step, ``after`` steps that exist, no cycle."""
    node = cfg.get("pipeline")
    if node is None or not node.get("steps"):
        raise RepriseError(
            "The config declares no pipeline (no pipeline.steps).",
            f"declare the steps in {DECLARATION}<name>.yaml and name it in the defaults list of "
            "project/config/config.yaml (- pipeline: <name>).",
        )
    raw = plain_dict(node, "pipeline")
    steps = {str(name): _step(str(name), spec) for name, spec in raw["steps"].items()}
    for step in steps.values():
        for given in step.inputs:
            where = f"{step.name}.inputs.{given.parameter}"
            _check_reference(steps, where, given.step, given.output)
        for other in step.after:
            if other not in steps:
                raise RepriseError(
                    f"Step {step.name} follows step '{other}', which the pipeline does not "
                    "declare.",
                    f"name one of {', '.join(steps)} in its `after`.",
                )
    ordered = _ordered(steps)
    model = raw.get("model") or {}
    model_output = str(model.get("output") or "")
    registered_by = str(model.get("registered_by") or "")
    if model_output:
        _check_reference(steps, "pipeline.model", *_split_reference("pipeline.model", model_output))
    if registered_by and registered_by not in steps:
        raise RepriseError(
            f"pipeline.model.registered_by names step '{registered_by}', which the pipeline does "
            "not declare.",
            f"name one of {', '.join(steps)}, or leave it out (no model is registered).",
        )
    return Pipeline({name: steps[name] for name in ordered}, model_output, registered_by)


def check_parameters(step: Step, project_file: Path, given: Collection[str]) -> None:
    """Refuse parameters (``given``: their names) that the component's MLproject entry point does
    not declare (MLflow would pass them as extra words) and declared ones without a default that
    nobody gives."""
    try:
        project = yaml.safe_load(project_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise RepriseError(
            f"Step {step.name}: cannot read {project_file} ({err}).", "fix the component."
        ) from None
    entry = (project.get("entry_points") or {}).get(step.entry_point)
    if entry is None:
        raise RepriseError(
            f"Step {step.name}: component {step.component} has no entry point "
            f"'{step.entry_point}'.",
            f"declare one of {', '.join(project.get('entry_points') or {}) or '(none)'} as its "
            "entry_point.",
        )
    declared_parameters = entry.get("parameters") or {}
    unknown = sorted(set(given) - set(declared_parameters))
    if unknown:
        raise RepriseError(
            f"Step {step.name} gives parameter(s) {', '.join(unknown)} that component "
            f"{step.component} does not take.",
            f"take them out of the step in {DECLARATION}, or declare them in the component's "
            "MLproject.",
        )
    missing = sorted(
        name
        for name, spec in declared_parameters.items()
        if name not in given and not (isinstance(spec, dict) and "default" in spec)
    )
    if missing:
        raise RepriseError(
            f"Step {step.name} does not give parameter(s) {', '.join(missing)}, which component "
            f"{step.component} needs.",
            f"add them to the step's parameters (or inputs) in {DECLARATION}.",
        )


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


def _require_name(kind: str, name: str, where: str) -> None:
    """Step, output, parameter and component names become run tags, search filters, file names
    and command-line flags: letters, digits and _ only."""
    if not NAME.fullmatch(name):
        raise RepriseError(
            f"{kind} name {name[:100]!r}{where} is not a name.",
            "use letters, digits and _ only (not starting with a digit; at most 100).",
        )


def _step(name: str, spec: Any) -> Step:
    _require_name("Step", name, "")
    if not isinstance(spec, dict):
        raise RepriseError(
            f"Step {name} of the pipeline is not a mapping.",
            "declare it with component, inputs, parameters and outputs.",
        )
    unknown = sorted(set(spec) - STEP_KEYS)
    if unknown:
        raise RepriseError(
            f"Step {name} has unknown key(s) {', '.join(unknown)}.",
            f"use only {', '.join(sorted(STEP_KEYS))}.",
        )
    inputs = tuple(_input(name, parameter, given) for parameter, given in _mapping(spec, "inputs"))
    step = Step(
        name=name,
        component=str(spec.get("component") or name),
        entry_point=str(spec.get("entry_point") or "main"),
        parameters=dict(_mapping(spec, "parameters")),
        inputs=inputs,
        after=tuple(str(s) for s in spec.get("after") or ()),
        outputs=tuple(str(s) for s in spec.get("outputs") or ()),
    )
    _require_name("Component", step.component, f" of step {name}")
    for output in step.outputs:
        _require_name("Output", output, f" of step {name}")
    for parameter in step.parameter_names(False):
        _require_name("Parameter", parameter, f" of step {name}")
    return step


def _mapping(spec: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise RepriseError(f"`{key}` of a pipeline step is not a mapping.", "write name: value.")
    return [(str(k), v) for k, v in value.items()]


def _input(step: str, parameter: str, given: Any) -> Input:
    options: dict[str, Any] = given if isinstance(given, dict) else {"from": given}
    unknown = sorted(set(options) - INPUT_KEYS)
    if unknown or not options.get("from"):
        raise RepriseError(
            f"Input {parameter} of step {step} is neither step.output nor "
            f"{{from: step.output, optional: true|false, pass: uri}}.",
            f"write e.g. `{parameter}: other_step.its_output`.",
        )
    source, output = _split_reference(f"{step}.inputs.{parameter}", str(options["from"]))
    if options.get("pass", "artifact") not in ("artifact", "uri"):
        raise RepriseError(
            f"Input {parameter} of step {step}: pass must be artifact or uri.",
            "leave it out for an artifact with its digest.",
        )
    return Input(
        parameter, source, output, bool(options.get("optional")), options.get("pass") == "uri"
    )


def _split_reference(where: str, reference: str) -> tuple[str, str]:
    step, dot, output = reference.partition(".")
    if not (step and dot and output):
        raise RepriseError(
            f"{where} is '{reference}', not step.output.", "name another step and its output."
        )
    return step, output


def _check_reference(steps: dict[str, Step], where: str, step: str, output: str) -> None:
    if step not in steps:
        raise RepriseError(
            f"{where} takes an output of step '{step}', which the pipeline does not declare.",
            f"name one of {', '.join(steps)}.",
        )
    if output not in steps[step].outputs:
        raise RepriseError(
            f"{where} takes output '{output}' of step {step}, which declares "
            f"{', '.join(steps[step].outputs) or 'no outputs'}.",
            f"name one of its outputs, or add '{output}' to its outputs.",
        )


def _ordered(steps: dict[str, Step]) -> list[str]:
    """Every step after those it follows, else in declaration order; a cycle is refused, named."""
    order: list[str] = []
    left = list(steps)
    while left:
        ready = [s for s in left if all(u in order for u in steps[s].upstream())]
        if not ready:
            raise RepriseError(
                f"The pipeline's steps form a cycle: {_cycle(steps, left)}.",
                "a step cannot take, directly or not, an output of its own.",
            )
        order.append(ready[0])
        left.remove(ready[0])
    return order


def _cycle(steps: dict[str, Step], left: list[str]) -> str:
    """One cycle among ``left``, as "a -> b -> a"."""
    path = [left[0]]
    while True:
        following = next(u for u in steps[path[-1]].upstream() if u in left)
        if following in path:
            loop = path[path.index(following) :] + [following]
            return " -> ".join(reversed(loop))
        path.append(following)


def _as_parameter(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def as_text(pipeline: Pipeline) -> str:
    """The graph as lines of text: each step, its component, what it takes and makes."""
    lines = []
    for step in pipeline.steps.values():
        component = "" if step.component == step.name else f" (component {step.component})"
        lines.append(f"{step.name}{component}")
        for given in step.inputs:
            optional = ", optional" if given.optional else ""
            lines.append(f"  <- {given.parameter}: {given.reference}{optional}")
        for other in step.after:
            lines.append(f"  after {other}")
        if step.outputs:
            lines.append(f"  -> {', '.join(step.outputs)}")
    if pipeline.model_output:
        by = f", registered by {pipeline.registered_by}" if pipeline.registered_by else ""
        lines.append(f"model: {pipeline.model_output}{by}")
    return "\n".join(lines)


def as_mermaid(pipeline: Pipeline) -> str:
    """The graph as a Mermaid flowchart: a node per step, an edge per input (labelled with the
    output), a dotted edge per ``after``."""
    lines = ["flowchart TD"]
    for step in pipeline.steps.values():
        lines.append(f'  {step.name}["{step.name}"]')
    for step in pipeline.steps.values():
        for given in step.inputs:
            arrow = "-.->" if given.optional else "-->"
            lines.append(f"  {given.step} {arrow}|{given.output}| {step.name}")
        for other in step.after:
            lines.append(f"  {other} -.->|after| {step.name}")
    return "\n".join(lines)
