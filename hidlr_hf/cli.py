"""The ``hidlr`` command: ``hidlr export RUN_OR_CHECKPOINT_DIR --out DIR [--budget B] [--force]``."""

from __future__ import annotations

import argparse
import sys

from .errors import HiDLRError


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``hidlr`` command and its ``export`` subcommand."""
    parser = argparse.ArgumentParser(prog="hidlr", description="Hi-DLR tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser(
        "export",
        help="export the PEFT adapter a Hi-DLR run discovered",
        description="Write the trained adapter (adapter_config.json and adapter_model.safetensors, peft's format) and "
        "hidlr_mask.json for the groups a Hi-DLR run kept, or, with --budget, for the most influential groups under "
        "that budget.",
    )
    export.add_argument(
        "run", help="a run's output_dir (its last checkpoint-* when it holds no final model) or a checkpoint-* folder"
    )
    export.add_argument("--out", required=True, help="folder to write the adapter (config, weights) and its mask into")
    export.add_argument(
        "--budget", default=None, help="rank groups now under this budget: a fraction (0.01), a count (150000), or top3"
    )
    export.add_argument(
        "--force", action="store_true",
        help="overwrite an earlier export (adapter_config.json, adapter_model.safetensors, README.md, hidlr_mask.json)",
    )
    return parser


def main(argv=None) -> int:
    """Entry point of ``hidlr``; returns the exit status (0 ok, 2 bad input, with one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            from .trainer.export import export_from_dir

            print(export_from_dir(args.run, args.out, budget=args.budget, force=args.force))
    except HiDLRError as exc:
        print(f"hidlr: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
