"""Which model to serve, the one contract of a model reference: release X.Y.Z, a model URI
(models:/name@alias, models:/name/N, runs:/...), or by default the project's name@prod; the
version an alias points to now, pinned; and the check that the model exists with a signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from reprise import manifest, paths, tracking
from reprise.errors import RepriseError
from reprise.serving import registry

if TYPE_CHECKING:  # imported when used: MLflow takes seconds to import
    from mlflow.models import Model
    from mlflow.models.model import ModelInfo
    from mlflow.types import Schema

PROD_ALIAS = "prod"


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(registered model, version, alias) of a models:/ URI (version and alias each None when
    not named); None for any other URI."""
    if not uri.startswith("models:/"):
        return None
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        return name, None, alias
    if "/" in name:
        name, version = name.split("/", 1)
        return name, version, None
    return name, None, None


def pinned_uri(uri: str, meta: dict[str, Any]) -> str:
    """``uri`` with the version ``resolve`` found for it: an alias may move while it loads."""
    return f"models:/{meta['name']}/{meta['version']}" if meta.get("version") else uri


def signature_inputs(info: Model | ModelInfo, uri: str) -> Schema:
    """The model's input schema; a model logged without one cannot be served."""
    signature = info.signature
    inputs: Schema | None = None if signature is None else signature.inputs
    if inputs is None:
        raise RepriseError(f"Model {uri} has no input signature.", "log it with one.")
    return inputs


def default_uri() -> str:
    """``models:/NAME@prod`` for the project's registered model (main.registered_model_name of
    project/config/config.yaml)."""
    config = paths.PROJECT_DIR / "config" / "config.yaml"
    try:
        name = (
            (yaml.safe_load(config.read_text()) or {}).get("main", {}).get("registered_model_name")
        )
    except (OSError, yaml.YAMLError) as err:
        raise RepriseError(f"Cannot read {config} ({err}).", "restore it from git.") from None
    if not name:
        raise RepriseError(
            f"No model to serve by default: main.registered_model_name is empty in {config}.",
            "name a model: --model models:/NAME@prod, or --release X.Y.Z.",
        )
    return f"models:/{name}@{PROD_ALIAS}"


def resolve(release: str | None = None, model: str | None = None) -> tuple[str, dict[str, Any]]:
    """The model URI to serve and what identifies it: a release's model version, a given URI
    (models:/name@alias, models:/name/version, runs:/...), or by default name@prod. A registered
    version whose files are on this disk also gets ``artifacts``, their folder."""
    if release:
        from mlflow.tracking import MlflowClient

        record = manifest.load(release)
        entry = record["mlflow"]["model"]
        # the version of this store that is the release's model: in another store the
        # manifest's number may be another model
        tracking.use_defaults()
        entry = {**entry, "version": manifest.registered_version(MlflowClient(), record)}
        meta = {
            "name": entry["name"],
            "version": str(entry["version"]),
            "release": release,
            "components": {s: c["sha"] for s, c in record["components"].items()},
        }
        local = registry.local_version(meta["name"], version=meta["version"])
        if local is not None:
            meta["artifacts"] = str(local.artifacts)
        return f"models:/{entry['name']}/{entry['version']}", meta
    uri = model or default_uri()
    parsed = parse_models_uri(uri)
    if parsed is None:
        return uri, {}
    name, version, alias = parsed
    local = registry.local_version(name, version=version, alias=alias)
    if local is not None:
        meta = {"name": name, "version": local.version, "artifacts": str(local.artifacts)}
        return uri, {**meta, "alias": alias} if alias else meta
    if alias is None:  # models:/name/N names its version; anything else is MLflow's to read
        return uri, {"name": name, "version": version} if version and version.isdigit() else {}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking.use_defaults()
    try:
        found = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        raise RepriseError(
            f"No model version of '{name}' is aliased '{alias}' in the tracking store.",
            "promote one: make promote VERSION=X.Y.Z (or pass --model / --release).",
        ) from None
    return uri, {"name": name, "version": str(found.version), "alias": alias}


def check_model(uri: str, meta: dict[str, Any]) -> None:
    """Fail now, not in every worker, when the model cannot be found or has no signature."""
    import mlflow

    pinned = pinned_uri(uri, meta)
    try:
        info = mlflow.models.get_model_info(pinned)
    except Exception as err:
        raise RepriseError(
            f"Model {pinned} cannot be found: {str(err).splitlines()[0]}",
            "check the URI (models:/name/version, models:/name@alias, runs:/id/model) "
            "and MLFLOW_TRACKING_URI.",
        ) from None
    signature_inputs(info, pinned)


@dataclass(frozen=True)
class ModelReference:
    """What to serve: release X.Y.Z, a model URI, or (neither) the registry's prod alias."""

    release: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.release and self.model:
            raise RepriseError(
                f"Both a release ({self.release}) and a model URI ({self.model}) were given.",
                "pass one of --release X.Y.Z and --model URI.",
            )

    @property
    def uri(self) -> str:
        """The model URI asked for (a release's is only known once its manifest is read)."""
        return self.model or default_uri()

    @property
    def alias(self) -> tuple[str, str] | None:
        """(registered model, alias) when the reference follows an alias, else None."""
        parsed = None if self.release else parse_models_uri(self.uri)
        if parsed is None or parsed[2] is None:
            return None
        return parsed[0], parsed[2]

    def resolve(self) -> tuple[str, dict[str, Any]]:
        """The model URI and its identity now (RepriseError when the alias points nowhere)."""
        return resolve(self.release, self.model)

    def __str__(self) -> str:
        return f"release {self.release}" if self.release else self.uri
