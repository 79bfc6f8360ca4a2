"""train_val_test_split: log the train, validation and test tables."""

from pathlib import Path

from step_kit import Step
from step_kit.cli import parse_args

from splitting import split

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args(HERE)
    with Step("train_val_test_split", vars(args)) as step:
        frame = step.input_table(args.input_artifact, args.input_sha256)
        parts = split(frame, args.target, args.val_size, args.test_size, args.random_seed)
        for name, part in parts.items():
            step.output_table(f"{name}_data", part, f"{name}.parquet")
        step.log_metrics({f"rows.{name}": len(part) for name, part in parts.items()})


if __name__ == "__main__":
    main()
