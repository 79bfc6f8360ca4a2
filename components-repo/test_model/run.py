"""test_model: score the model on the test table, test its behaviour, apply the quality gate,
and register it (alias candidate) only when it passes."""

from pathlib import Path

from step_kit import Schema, Step, StepError, persist, plots
from step_kit.cli import json_param, parse_args
from step_kit.findings import listing as findings_listing
from step_kit.metrics import evaluate
from step_kit.scoring import Predictions, fixed_order, predictions
from step_kit.tables import array_digest

import mlflow
from mlflow.exceptions import MlflowException

from evaluation import behaviour_tests, gate
from registration import set_alias

HERE = Path(__file__).resolve().parent


def load_model(uri: str):
    """The sklearn model at a models:/ URI, or a StepError naming it."""
    try:
        # never mlflow.sklearn.load_model: it trusts whatever types the MLmodel file lists
        return persist.load_logged(uri)
    except StepError:
        raise
    except Exception as err:
        raise StepError(
            f"Model {uri} cannot be loaded: {err}",
            "pass the models:/ URI that train_model recorded (run tag reprise.output.model).",
        ) from None


def prod_model(name: str, alias: str):
    """The model registered as name@alias, or None when there is none."""
    if not name:
        return None
    try:
        mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return load_model(f"models:/{name}@{alias}")


def main() -> None:
    args = parse_args(HERE)
    with Step("test_model", vars(args)) as step:
        schema = Schema.from_json(args.schema)
        cfg = json_param("evaluation", args.evaluation)
        beta, ks, rules = cfg["beta"], cfg["ks"], cfg["gate"]
        behaviour = cfg.get("behaviour") or {}
        test = step.input_table(args.test_artifact, args.test_sha256)
        model = load_model(args.model)
        features, target = schema.xy(test)

        def score(candidate, prefix: str) -> tuple[dict[str, float], Predictions]:
            # in the fixed order: the same bits on any thread count, so a rerun can verify them
            scored = predictions(candidate, features)
            proba, labels, at_half = scored
            return evaluate(target, proba, labels, at_half, beta, ks, prefix), scored

        metrics, scored = score(model, "test")
        # what the model does, bit for bit: a release is verified by this, not by its files
        step.record_output(
            "predictions",
            args.model,
            content_digest=array_digest(scored.proba, scored.labels),
        )
        probas = {"model": scored.proba}
        if args.baselines:
            folder = step.input_file(args.baselines)
            for path in sorted(folder.glob("*.skops")):
                baseline_scores, baseline_scored = score(
                    persist.load(path), f"test.baseline.{path.stem}"
                )
                probas[path.stem] = baseline_scored.proba
                metrics |= baseline_scores
        prod = prod_model(args.registered_model_name, rules["prod_alias"])
        prod_metrics = None
        if prod is not None:
            fitted = getattr(prod, "estimator", prod)  # under its decision threshold
            reads = list(getattr(fitted, "feature_names_in_", features.columns))
            if sorted(reads) != sorted(features.columns):
                raise StepError(
                    f"The model {args.registered_model_name}@{rules['prod_alias']} reads the "
                    f"columns {reads}, not this data set's features {list(features.columns)}: "
                    "it is another data set's model, so the gate cannot compare against it.",
                    "give this data set its own model name (main.registered_model_name=...).",
                )
            prod_metrics = score(prod, "test")[0]
        if prod_metrics:
            metrics["test.prod.roc_auc"] = prod_metrics["test.roc_auc"]
        step.log_metrics(metrics)

        labels = [schema.negative_class, schema.positive_class]
        step.log_figure(plots.roc_pr_curves(target, probas, "test"), "test_roc_pr.png")
        step.log_figure(
            plots.confusion_matrix_plot(target, scored.labels, labels, "test"),
            "test_confusion_matrix.png",
        )
        step.log_figure(plots.calibration_plot(target, probas), "test_calibration.png")

        with fixed_order(model):  # the report is recorded too: the same on any thread count
            findings = [
                *behaviour_tests(model, features, schema, behaviour),
                *gate(metrics, rules, prod_metrics),
            ]
        step.log_report("test_report", [f.as_dict() for f in findings])
        step.log_metrics({"gate.failed": sum(not f.passed for f in findings)})
        failed = [f for f in findings if not f.passed]
        if failed:
            listing = findings_listing(failed)
            raise StepError(
                f"The model fails {len(failed)} of {len(findings)} test conditions, so it was not "
                f"registered: {listing}.",
                "improve the model, or (if the bar is wrong) change config group 'evaluation'.",
            )
        if args.registered_model_name:
            version = mlflow.register_model(args.model, args.registered_model_name)
            set_alias(
                mlflow.MlflowClient(), version.name, rules["candidate_alias"], version.version
            )
            step.record_output("registered_model", f"models:/{version.name}/{version.version}")


if __name__ == "__main__":
    main()
