"""The step planner: repeats per concept, epochs and save_every_n_epochs for a step target.

Every candidate is counted by the trainer's own plan (`plan_from_scan`: buckets, batches
that never mix buckets, gradient accumulation, regularisation balance), not by the
tutorials' `images x repeats x epochs / batch`, which is only exact with one bucket.
Applying a proposal renames the `<repeats>_<concept>` folders, and only on confirmation.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace

from ...config import TrainConfig
from ...errors import InvalidInput
from ..folders import DatasetScan
from ..plan import TrainingPlan, plan_from_scan, scan_config_dataset

STEP_RANGES = {"character": (1500, 3000), "style": (3000, 5000)}
RULE_SOURCE = ("the rule of thumb of the common LoRA training guides: total steps = images x repeats x epochs / "
               "batch, about 1,500-3,000 for a character or object and more (3,000-5,000) for a style")
FILES = (6, 10)  # files saved for the comparison grid
PREFERRED_EPOCHS, PREFERRED_REPEATS = 12, 10
MAX_REPEATS, MAX_EPOCHS = 100, 100


def parse_step_range(text: str) -> tuple[int, int]:
    """'1500-3000' or '2000' (exactly) -> (low, high)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[-–:]\s*(\d+))?\s*", str(text))
    if not match:
        raise InvalidInput(f"target steps {text!r}: write a range like 1500-3000, or one number")
    low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    if low < 1 or high < low:
        raise InvalidInput(f"target steps {text!r}: the range must be positive, low to high (e.g. 1500-3000)")
    return low, high


@dataclass
class Proposal:
    repeats: dict[str, int]  # concept folder -> proposed repeats (training concepts only)
    epochs: int
    save_every_n_epochs: int
    files: int
    target: tuple[int, int]
    plan: TrainingPlan  # the trainer's own count for the proposal
    notes: list[str] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.plan.total_steps

    @property
    def in_range(self) -> bool:
        return self.target[0] <= self.total_steps <= self.target[1]

    def renames(self) -> list[tuple[str, str]]:
        """(folder, new folder) for each concept whose repeats change."""
        moves = []
        for folder, repeats in self.repeats.items():
            base = os.path.basename(folder)
            new = re.sub(r"^\d+_", f"{repeats}_", base)
            if new != base:
                moves.append((folder, os.path.join(os.path.dirname(folder), new)))
        return moves

    def config_changes(self) -> dict:
        c = self.plan.config
        return {"train_data_dir": c.train_data_dir, "max_train_epochs": self.epochs, "max_train_steps": 0,
                "save_every_n_epochs": self.save_every_n_epochs, "train_batch_size": c.train_batch_size,
                "gradient_accumulation_steps": c.gradient_accumulation_steps}

    def summary(self) -> str:
        c, ts = self.plan.config, self.plan.training_set
        lines = [f"Target {self.target[0]}-{self.target[1]} steps ({RULE_SOURCE})."]
        for folder, repeats in self.repeats.items():
            count = sum(1 for item in ts.scan.items if item.concept.folder == folder)
            lines.append(f"  {os.path.basename(folder)}: {count} images x {repeats} repeats")
        lines.append(f"Epochs {self.epochs}, batch {c.train_batch_size}, gradient accumulation "
                     f"{c.gradient_accumulation_steps}: {self.plan.steps_per_epoch} steps per epoch (the trainer's "
                     f"count, buckets included) x {self.epochs} = {self.total_steps} steps")
        lines.append(f"save_every_n_epochs={self.save_every_n_epochs}: {self.files} files for the comparison grid")
        for old, new in self.renames():
            lines.append(f"  rename {os.path.basename(old)} -> {os.path.basename(new)}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def with_repeats(scan: DatasetScan, repeats: dict[str, int]) -> DatasetScan:
    """A copy of `scan` whose concepts have other repeats (by folder)."""
    concepts = {id(c): replace(c, repeats=repeats.get(c.folder, c.repeats)) for c in scan.concepts}
    items = [replace(item, concept=concepts[id(item.concept)]) for item in scan.items]
    return DatasetScan(items, list(concepts.values()), scan.skipped, scan.warnings, scan.hidden)


def files_saved(epochs: int, every: int) -> int:
    """The final file plus one every `every` epochs before the last (as the loop saves)."""
    return 1 + (epochs - 1) // every if every else 1


def save_every(epochs: int) -> int:
    """The smallest interval that saves at most FILES[1] files."""
    every = 1
    while files_saved(epochs, every) > FILES[1]:
        every += 1
    return every


def propose(config: TrainConfig, target_steps: tuple[int, int] | None = None, epochs: int = 0,
            kind: str = "character", scan: DatasetScan | None = None) -> Proposal:
    """Repeats, epochs and save interval that land in `target_steps` (default: STEP_RANGES[kind])
    with `epochs` fixed when given, counted by the trainer's plan."""
    if kind not in STEP_RANGES:
        raise InvalidInput(f"kind {kind!r}: choose {' or '.join(STEP_RANGES)}")
    target = target_steps or STEP_RANGES[kind]
    config.validate()
    scan = scan or scan_config_dataset(config)
    per_epoch = _steps_per_epoch_by_base(config, scan, target[1])
    chosen = _choose(per_epoch, target, epochs)
    base, count = chosen
    repeats = _balanced_repeats(scan, base)
    every = save_every(count)
    final = config.replace(max_train_epochs=count, max_train_steps=0, save_every_n_epochs=every)
    plan = plan_from_scan(final, with_repeats(scan, repeats))
    proposal = Proposal(repeats, count, every, files_saved(count, every), target, plan)
    if not proposal.in_range:
        proposal.notes.append(f"{plan.total_steps} steps is the closest this folder gets to the target: "
                              + ("each image once per epoch is already more" if plan.total_steps > target[1]
                                 else "add pictures or raise the epochs"))
    if proposal.files < FILES[0]:
        proposal.notes.append(f"only {proposal.files} files for the grid: {count} epochs are fewer than {FILES[0]}")
    return proposal


def _balanced_repeats(scan: DatasetScan, base: int) -> dict[str, int]:
    """`base` repeats for the largest training concept; the others as many examples per epoch."""
    counts = {c.folder: sum(1 for i in scan.items if i.concept is c) for c in scan.concepts if not c.is_reg}
    largest = max(counts.values())
    return {folder: max(1, round(base * largest / n)) if n else 1 for folder, n in counts.items()}


def _steps_per_epoch_by_base(config: TrainConfig, scan: DatasetScan, most: int) -> dict[int, int]:
    """base repeats -> the trainer's steps per epoch, until one epoch alone passes `most`."""
    one_epoch = config.replace(max_train_epochs=1, max_train_steps=0)
    found = {}
    for base in range(1, MAX_REPEATS + 1):
        found[base] = plan_from_scan(one_epoch, with_repeats(scan, _balanced_repeats(scan, base))).steps_per_epoch
        if found[base] > most:
            break
    return found


def _choose(per_epoch: dict[int, int], target: tuple[int, int], epochs: int) -> tuple[int, int]:
    """(base repeats, epochs) in the target, closest to the guides' usual 10-ish repeats and
    10-20 epochs (at least FILES[0], so the grid gets its files), then to the target's middle;
    when nothing fits, the closest total."""
    low, high = target
    middle = (low + high) / 2
    epoch_choices = [epochs] if epochs else range(1, MAX_EPOCHS + 1)
    fitting = [((count < FILES[0], abs(math.log(count / PREFERRED_EPOCHS)) + abs(math.log(base / PREFERRED_REPEATS)),
                 abs(count * steps - middle)), base, count)
               for count in epoch_choices for base, steps in per_epoch.items() if low <= count * steps <= high]
    if fitting:
        _, base, count = min(fitting)
        return base, count
    distance = lambda total: low - total if total < low else total - high  # noqa: E731
    _, base, count = min((distance(count * steps), base, count)
                         for count in epoch_choices for base, steps in per_epoch.items())
    return base, count


def apply_renames(proposal: Proposal) -> list[tuple[str, str]]:
    """Rename the concept folders to the proposed repeats. Only on the user's confirmation;
    checks every target first, so either all folders are renamed or none."""
    moves = proposal.renames()
    for old, new in moves:
        if not os.path.isdir(old):
            raise InvalidInput(f"{old} is gone: check the dataset again before applying")
        if os.path.exists(new) and new not in dict(moves):
            raise InvalidInput(f"cannot rename {old} to {new}: that folder exists; merge or rename it first")
    # Through temporary names, so swapping 5_a and 10_a-like chains cannot collide.
    staged = []
    for old, new in moves:
        temporary = old + ".renaming"
        os.rename(old, temporary)
        staged.append((temporary, new))
    for temporary, new in staged:
        os.rename(temporary, new)
    return moves
