"""`python -m lib_trainer doctor DATASET`: check a dataset folder before training, and plan
its steps.

Reads only, unless a flag confirms a change: --set-aside (the second picture of each
duplicate pair goes to `_set_aside/`), --remove-tag (through the tag editor, backed up),
--apply (renames the `<repeats>_<concept>` folders to the planned repeats), --save-report
(writes dataset_doctor.json and .md). Exit status: 0 when no finding is a problem, 3 when
some are (so a script can stop before training), 1 for an error, 2 for a bad command line.
Any training flag (--resolution, --trigger_word, --config FILE, ...) sets what is checked.
"""
from __future__ import annotations

import argparse
import os

from ..cli_args import add_config_arguments, config_from_args

PROBLEMS_FOUND = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="the folder holding the <repeats>_<concept> folders (train_data_dir)")
    parser.add_argument("--trigger", default=None, metavar="WORD",
                        help="the word every caption should have (default: trigger_word, else each concept's "
                             "first word)")
    parser.add_argument("--all", action="store_true", help="also list the findings that are fine")
    parser.add_argument("--save-report", nargs="?", const="", default=None, metavar="FOLDER",
                        help="write dataset_doctor.json and .md (default: into the dataset folder)")
    parser.add_argument("--set-aside", action="store_true",
                        help="move the second picture of each duplicate pair (and its caption) to _set_aside/")
    parser.add_argument("--remove-tag", action="append", default=[], metavar="TAG",
                        help="remove this tag from every caption of the concepts (backed up first); repeatable")
    plan = parser.add_argument_group("step planner")
    plan.add_argument("--target-steps", default="", metavar="LOW-HIGH",
                      help="propose repeats, epochs and save_every_n_epochs for this step range (e.g. 1500-3000)")
    plan.add_argument("--epochs", type=int, default=0, help="plan for this number of epochs")
    plan.add_argument("--kind", choices=("character", "style"), default=None,
                      help="plan with the usual range: character 1500-3000, style 3000-5000 steps")
    plan.add_argument("--batch", type=int, default=None, help="batch size of the plan (train_batch_size)")
    plan.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps of the plan")
    plan.add_argument("--apply", action="store_true",
                      help="rename the <repeats>_<concept> folders to the planned repeats")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..dataset.doctor import default_token_counter, examine

    config = _config(args)
    report = examine(config, args.trigger, default_token_counter())
    print(report.headline() + f" ({report.seconds:.1f} s)")
    for finding in report.sorted_findings():
        if finding.severity != "fine" or args.all:
            print(f"  [{finding.severity}] {finding.check}: {finding.reason}")
            if finding.severity != "fine":
                print(f"      -> {finding.action}")
    if args.save_report is not None:
        paths = report.save(args.save_report or None)
        print("report written: " + ", ".join(paths))
    changed = _confirmed_changes(args, config, report)
    if args.target_steps or args.epochs or args.kind or args.apply:
        _plan(args, config)
    elif not changed:
        print("plan the steps with --target-steps 1500-3000 (or --kind style, --epochs N)")
    return PROBLEMS_FOUND if report.problems() and not changed else 0


def _config(args: argparse.Namespace):
    from ..config import TrainConfig

    config = config_from_args(args, base=TrainConfig()).replace(train_data_dir=args.dataset)
    if args.batch is not None:
        config = config.replace(train_batch_size=args.batch)
    if args.grad_accum is not None:
        config = config.replace(gradient_accumulation_steps=args.grad_accum)
    config.validate()
    return config


def _confirmed_changes(args, config, report) -> bool:
    from ..dataset.doctor.captions import remove_tag_from_all
    from ..dataset.doctor.duplicates import set_aside

    changed = False
    if args.set_aside:
        second = []
        for finding in report.findings:
            if finding.check in ("exact duplicate", "near duplicate"):
                keep, other = sorted(finding.paths)
                if keep not in second and other not in second:
                    second.append(other)
        for path in set_aside(second, config.caption_extension):
            print(f"set aside: {path}")
        changed = changed or bool(second)
    for tag in args.remove_tag:
        for concept in sorted({row.concept for row in report.images}):
            count, backup = remove_tag_from_all(os.path.join(config.train_data_dir, concept), tag,
                                                config.caption_extension)
            print(f"{concept}: {tag!r} removed from {count} captions" + (f"; originals in {backup}" if backup else ""))
            changed = True
    return changed


def _plan(args, config) -> None:
    from ..dataset.doctor.planner import apply_renames, parse_step_range, propose

    target = parse_step_range(args.target_steps) if args.target_steps else None
    proposal = propose(config, target, args.epochs, args.kind or "character")
    print("\nStep plan:\n" + proposal.summary())
    changes = " ".join(f"--{name} {value}" for name, value in proposal.config_changes().items()
                       if name != "train_data_dir")
    print(f"train with: {changes}")
    if args.apply:
        for old, new in apply_renames(proposal):
            print(f"renamed {old} -> {new}")
    elif proposal.renames():
        print("run again with --apply to rename the folders")
