"""data_check: run every data check, log the report, fail naming every failed check."""

from pathlib import Path

from step_kit import Schema, Step, StepError
from step_kit.cli import json_param, parse_args
from step_kit.findings import listing as findings_listing

from checks import run_checks

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args(HERE)
    with Step("data_check", vars(args)) as step:
        schema = Schema.from_json(args.schema)
        frame = step.input_table(args.input_artifact, args.input_sha256)
        reference = None
        if args.reference_artifact:
            reference = step.input_table(args.reference_artifact, args.reference_sha256)
            # The reference is raw: its missing-value token is not a category to compare.
            reference = reference.replace(args.missing_token, None)
        results = run_checks(frame, schema, json_param("checks", args.checks), reference)
        step.log_report("data_check_report", [r.as_dict() for r in results])
        failed = [r for r in results if not r.passed]
        step.log_metrics({"checks_run": len(results), "checks_failed": len(failed)})
        if failed:
            listing = findings_listing(failed)
            raise StepError(
                f"{len(failed)} of {len(results)} data checks failed: {listing}.",
                "inspect the data (see data_check_report.json) or, if the change is expected, "
                "adjust the thresholds in config group 'data_check'.",
            )


if __name__ == "__main__":
    main()
