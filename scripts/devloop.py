#!/usr/bin/env python
"""The engine's dev loop: one Hi-DLR (or AdamW) run of the benchmark protocol, with rate-rule settings overridden.

Judging an engine change takes realistic lengths (SST-2 500 steps, MRPC 460 steps, real MiniLM weights); the full
protocol (benchmarks/README.md) takes hours, so engine work iterates on a few fixed runs first::

    python scripts/devloop.py --task sst2 --lr 5e-5 --tag my-change
    python scripts/devloop.py --task mrpc --lr 5e-5 --tag longer-horizon --set hidlr_horizon=32
    python scripts/devloop.py --task sst2 --lr 5e-5 --tag reference --adamw

Each run trains exactly as the benchmark's ``hidlr`` method (``module_type`` groups, ``every=auto``) or, with
``--adamw``, as ``adamw_lr<lr>``, writes its full run record to ``<out>/<tag>/<task>_lr<lr>_s<seed>.json`` and
appends one line (score, final base rates, rounds, probe seconds, commit) to ``<out>/results.log``.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from hidlr_bench import protocol  # noqa: E402  (sets the environment defaults before torch is imported)
from hidlr_bench.methods import train_one  # noqa: E402

METHOD = "devloop"


def parse_setting(text: str) -> tuple[str, object]:
    """``hidlr_horizon=1.5`` -> ``("hidlr_horizon", 1.5)``: a HiDLRTrainingArguments field and its value (``true`` /
    ``false`` become booleans, whole numbers ints: the fields that hold counts need them)."""
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("hidlr_"):
        raise argparse.ArgumentTypeError(f"expected hidlr_<field>=<value>, got {text!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    for kind in (int, float):  # hidlr_probe_batch_size=64 is a count, hidlr_horizon=32 a float
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sst2", choices=protocol.TASKS)
    parser.add_argument("--lr", type=float, default=protocol.TRAINER_DEFAULT_LR, help="starting rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", required=True, help="name of this variant: its runs go to <out>/<tag>/")
    parser.add_argument("--set", dest="settings", type=parse_setting, action="append", default=[],
                        help="a Hi-DLR setting for this run, e.g. hidlr_horizon=32 (repeatable)")
    parser.add_argument("--adamw", action="store_true", help="plain AdamW at --lr instead of Hi-DLR")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "devloop")
    parser.add_argument("--realised-window", type=int, default=0, metavar="N",
                        help="also record, after each probe round, the training gradient dotted with the step it took "
                             "over the next N steps, and print the summary (hidlr_bench/realised.py)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.realised_window < 0:
        parser.error(f"--realised-window must be 0 (off) or a number of steps (got {args.realised_window})")
    spec = {"kind": "adamw", "lr": args.lr, "desc": "dev loop: AdamW"} if args.adamw else {
        "kind": "hidlr", "lr": args.lr, "grouping": "module_type", "hidlr_args": dict(args.settings),
        "desc": "dev loop: Hi-DLR"}
    protocol.METHOD_SPECS[METHOD] = spec
    folder = args.out / args.tag
    folder.mkdir(parents=True, exist_ok=True)
    # The code the run imports now, not what the checkout holds when it ends.
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    started = time.time()
    record = train_one(args.task, METHOD, args.seed, protocol.protocol_of(args.task),
                       folder / f"work_{args.task}_{args.lr:g}_s{args.seed}", realised_window=args.realised_window)
    record["wall_seconds"] = time.time() - started
    record["commit"] = commit
    (folder / f"{args.task}_lr{args.lr:g}_s{args.seed}.json").write_text(json.dumps(record, default=str))
    line = (f"{args.tag} {args.task} lr={args.lr:g} seed={args.seed} {record['metric']}={record['value']:.4f} "
            f"train_loss={record['train_loss']:.3f} wall={record['wall_seconds']:.0f}s commit={commit}")
    hid = record.get("hidlr")
    if hid:
        rates = " ".join(f"{n}:{r:.1e}" for n, r in zip(hid["group_names"], hid["base_rates"]))
        line += f" rounds={hid['rounds']} probe_s={hid['probe_seconds']:.0f} base_rates={rates}"
    if args.settings:
        line += " set=" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in args.settings)
    print(line)
    if record.get("realised"):
        print_realised(record["realised"])
    with open(args.out / "results.log", "a") as fh:
        fh.write(line + "\n")
    return 0


def print_realised(rounds: list) -> None:
    """One line per round and group: the slope the probe predicts along the step against the realised one."""
    from hidlr_bench.realised import summarise

    print("step phase group lr predicted realised (std error; first half / second half) steps clipped")
    for row in summarise(rounds):
        print(f"{row['step']:4d} {row['phase'][:5]} {row['group']:10s} {row['lr']:.1e} {row['predicted']:+.2e} "
              f"{row['realised']:+.2e} ({row['std_error']:.1e}; {row['first_half']:+.2e} / {row['second_half']:+.2e}) "
              f"{row['steps']} {row['clipped']:.0%}")


if __name__ == "__main__":
    sys.exit(main())
