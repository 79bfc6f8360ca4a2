"""train_model: fit the inference pipeline, score it on validation, log it as an MLflow model."""

from pathlib import Path

import mlflow
from mlflow.models import infer_signature

from step_kit import Schema, Step
from step_kit.cli import json_param, parse_args
from step_kit.metrics import binary_scores
from training import SKOPS_TRUSTED_TYPES, fit, pinned_requirements

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args(HERE)
    with Step("train_model", vars(args)) as step:
        schema = Schema.from_json(args.schema)
        hyperparameters = json_param("hyperparameters", args.hyperparameters)
        train = step.input_table(args.train_artifact, args.train_sha256)
        val = step.input_table(args.val_artifact, args.val_sha256)
        model = fit(train, schema, hyperparameters)
        mlflow.log_params({f"model.{k}": v for k, v in hyperparameters.items()})

        features, target = schema.xy(val)
        proba = model.predict_proba(features)[:, 1]
        step.log_metrics({f"val.{k}": v for k, v in binary_scores(target, proba).items()})

        example = features.head(5)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=pinned_requirements(),
        )
        step.record_output("model", info.model_uri)


if __name__ == "__main__":
    main()
