"""test_model: score the model on the test table, then register it."""

from pathlib import Path

import mlflow

from evaluation import score
from step_kit import Schema, Step, StepError
from step_kit.cli import parse_args

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args(HERE)
    with Step("test_model", vars(args)) as step:
        schema = Schema.from_json(args.schema)
        test = step.input_table(args.test_artifact, args.test_sha256)
        try:
            model = mlflow.sklearn.load_model(args.model)
        except Exception as err:
            raise StepError(
                f"Model {args.model} cannot be loaded: {err}",
                "pass the models:/ URI that train_model recorded (run tag reprise.output.model).",
            ) from None
        step.log_metrics(score(model, test, schema))
        if args.registered_model_name:
            version = mlflow.register_model(args.model, args.registered_model_name)
            step.record_output("registered_model", f"models:/{version.name}/{version.version}")


if __name__ == "__main__":
    main()
