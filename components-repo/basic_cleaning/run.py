"""basic_cleaning: clean the raw table and log counts of what was removed."""

from pathlib import Path

from step_kit import Schema, Step
from step_kit.cli import flag_param, json_param, parse_args

from cleaning import clean

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args(HERE)
    with Step("basic_cleaning", vars(args)) as step:
        raw = step.input_table(args.input_artifact, args.input_sha256)
        frame, counts = clean(
            raw,
            Schema.from_json(args.schema),
            args.missing_token,
            json_param("ranges", args.ranges),
            flag_param("drop_duplicates", args.drop_duplicates),
        )
        step.log_metrics(counts)
        step.output_table("clean_data", frame, "clean_data.parquet")


if __name__ == "__main__":
    main()
