"""train_model: fit the model and its baselines, choose the threshold on validation, score, plot,
and log the model (threshold inside) as an MLflow model stored with skops."""

import warnings
from pathlib import Path

from step_kit import Schema, Step, persist, plots
from step_kit.cli import json_param, parse_args
from step_kit.metrics import evaluate
from step_kit.scoring import predictions

import mlflow
from mlflow.models import infer_signature

from training import (
    BASELINES,
    Preprocess,
    choose_threshold,
    feature_importances,
    fit,
    pinned_requirements,
    with_threshold,
)

HERE = Path(__file__).resolve().parent


# A column with a missing number is float64 in the clean data (basic_cleaning makes it so), and the
# model imputes a number missing later; MLflow's hint about integer columns is noise here.
warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")


def main() -> None:
    args = parse_args(HERE)
    with Step("train_model", vars(args)) as step:
        schema = Schema.from_json(args.schema)
        # the model's config group as a whole: its `name` is model_name, the rest are keywords
        given = json_param("hyperparameters", args.hyperparameters)
        hyperparameters = {k: v for k, v in given.items() if k != "name"}
        evaluation = json_param("evaluation", args.evaluation)
        preprocess = Preprocess.from_dict(json_param("preprocess", args.preprocess))
        threshold_cfg, beta, ks = evaluation["threshold"], evaluation["beta"], evaluation["ks"]
        train = step.input_table(args.train_artifact, args.train_sha256)
        val = step.input_table(args.val_artifact, args.val_sha256)
        mlflow.log_params({f"model.{k}": v for k, v in hyperparameters.items()})

        model = fit(train, schema, args.model_name, hyperparameters, preprocess)
        features, target = schema.xy(val)
        choice = choose_threshold(
            model,
            features,
            target,
            threshold_cfg["strategy"],
            beta,
            threshold_cfg.get("min_precision", 0.0),
        )
        final = with_threshold(model, choice.threshold)
        mlflow.log_params({"threshold.strategy": threshold_cfg["strategy"]})
        scored = predictions(final, features)
        scores = evaluate(
            target, scored.proba, scored.labels, scored.labels_at_half, beta, ks, "val"
        )
        scores["threshold"] = choice.threshold
        probas = {args.model_name: scored.proba}
        baseline_dir = step.workdir / "baselines"
        baseline_dir.mkdir()
        for name, params in BASELINES.items():
            baseline = fit(train, schema, name, params, preprocess)
            baseline_scored = predictions(baseline, features)
            probas[name] = baseline_scored.proba
            scores |= evaluate(
                target,
                baseline_scored.proba,
                baseline_scored.labels,
                baseline_scored.labels,
                beta,
                ks,
                f"val.baseline.{name}",
            )
            persist.save(baseline, baseline_dir / f"{name}.skops")
        step.log_metrics(scores)

        labels = [schema.negative_class, schema.positive_class]
        step.log_figure(plots.roc_pr_curves(target, probas, "validation"), "val_roc_pr.png")
        step.log_figure(
            plots.confusion_matrix_plot(
                target,
                scored.labels,
                labels,
                f"validation, threshold {choice.threshold:.3f}",
            ),
            "val_confusion_matrix.png",
        )
        step.log_figure(plots.calibration_plot(target, probas), "val_calibration.png")
        step.log_figure(
            plots.threshold_curve(
                choice.thresholds, choice.scores, choice.threshold, choice.metric
            ),
            "val_threshold_curve.png",
        )
        names, importances, kind = feature_importances(model, features, target)
        step.log_figure(
            plots.feature_importances_plot(names, importances, f"feature importances: {kind}"),
            "feature_importances.png",
        )
        estimator = model.named_steps["classifier"]
        if args.model_name == "decision_tree":
            step.log_figure(plots.tree_top_levels(estimator, names, labels), "tree_top_levels.png")

        example = features.head(5)
        info = mlflow.sklearn.log_model(
            final,
            name="model",
            serialization_format="skops",
            skops_trusted_types=persist.trusted_types(final),
            signature=infer_signature(example, final.predict(example)),
            input_example=example,
            pip_requirements=pinned_requirements(),
        )
        step.record_output("model", info.model_uri)
        mlflow.log_artifacts(str(baseline_dir), "baselines")
        step.record_output("baselines", f"runs:/{step.run_id}/baselines")


if __name__ == "__main__":
    main()
