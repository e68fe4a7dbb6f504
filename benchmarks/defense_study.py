"""Paper-style tables: how much of each backdoor does every defense remove, and at what accuracy cost?

For each attack (BadEncoder, DRUPE, BASSL, CTRL) the poisoned encoder comes from benchmarks/attacks.py's
cache (made with the real `poison` command when missing). Each defense is the real command on the
defender's 5% clean subset of the pre-training family; every encoder is evaluated with a linear probe
on the downstream family with the attack's own trigger. Outputs are cached per (attack, setting), so a
rerun only computes what is missing (`--fresh` recomputes).

    python benchmarks/defense_study.py [--tables main teachers students losses families longer-ft] [--attacks ...]
        [--downstream glyphs] [--arch resnet18-cifar-w16] [--device cpu] [--json-out rows.json]

Tables (the seed paper's): `main` (no defense, fine-tune-only baseline, the paper's recommended setting
FT teacher + warm-up student + attention loss, and our recommended `distill` defaults), `teachers`
(each purify method), `students` (each student with the FT teacher and AT), `losses` (each loss with
the FT teacher and the warm-up student), `families` (each family's recommended recipe on this
architecture), `longer-ft` (the convnet recipe with a 150-epoch teacher fine-tune). Targets
for the recommended recipe: mean ASR <= 5%, ACC at most 2 points below the undefended encoder, ASR
below the fine-tune-only baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from attacks import ATTACKS, FAMILIES, TARGET_CLASS, TRIGGERS, clean_encoder, cli

from encoder_clean.distill.recipe import NO_FINETUNE, PAPER, RECOMMENDED, RECOMMENDED_TRANSFORMER, Recipe

LOSSES = ("at", "nad", "afd", "fitnet", "cc", "kd", "sp", "similarity", "rkd", "pkt")


def recipe_command(recipe: Recipe) -> tuple[str, ...]:
    """The explicit `distill` command of a recipe (so equal recipes share one cached output)."""
    return ("distill", "--finetune", recipe.finetune, "--student", recipe.student,
            *(flag for loss in recipe.losses for flag in ("--loss", loss)),
            *(flag for option in recipe.options for flag in ("--option", option)),
            *(flag for option in recipe.finetune_options for flag in ("--finetune-option", option)))


def teacher_command(method: str, options: tuple[str, ...] = ()) -> tuple[str, ...]:
    return ("purify", "--method", method, *(flag for option in options for flag in ("--option", option)))


def _values(command: tuple[str, ...], flag: str) -> tuple[str, ...]:
    return tuple(command[i + 1] for i, word in enumerate(command[:-1]) if word == flag)


def _without(command: tuple[str, ...], flag: str) -> tuple[str, ...]:
    kept, skip = [], False
    for word in command:
        if skip:
            skip = False
        elif word == flag:
            skip = True
        else:
            kept.append(word)
    return tuple(kept)


# setting name -> the command after the input checkpoint (None: the undefended encoder itself)
TABLES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "main": {
        "poisoned (no defense)": None,
        "fine-tune only (purify ft)": teacher_command("ft"),
        "paper: FT + warm-up + AT": recipe_command(PAPER),
        "recommended (distill defaults)": recipe_command(RECOMMENDED),
    },
    "teachers": {f"purify {m}": teacher_command(m) for m in ("ft", "fp", "anp", "moth")},
    "students": {f"student {s}": recipe_command(Recipe("ft", s, ("at",))) for s in ("raw", "void", "warmup")},
    "losses": {f"loss {name}": recipe_command(Recipe("ft", "warmup", (name,))) for name in LOSSES},
    # the transformer recipe (chosen on a small ViT, benchmarks/vit_study.py) on the convnets
    "families": {"convnet recipe (ResNet default)": recipe_command(RECOMMENDED),
                 "transformer recipe": recipe_command(RECOMMENDED_TRANSFORMER)},
    # the convnet recipe with the transformer recipe's longer teacher fine-tune
    "longer-ft": {"convnet recipe, FT 150 epochs": recipe_command(
        Recipe("ft", "warmup", RECOMMENDED.losses, RECOMMENDED.options, ("epochs=150",)))},
}


def slug(command: tuple[str, ...]) -> str:
    return "".join(c if c.isalnum() else "_" for c in "_".join(command)).strip("_")


class DefenseRunner:
    """Runs each defense command once per attack, caching the output and its wall time on disk.

    A `distill --finetune M` whose student is not the raw copy of the poisoned encoder only needs the
    poisoned encoder as its teacher's starting point, so it distils from the cached `purify --method M`
    output with `--finetune none`; the reported seconds are the teacher's plus the distillation's.
    """

    def __init__(self, args: argparse.Namespace, pre: str):
        self.args, self.pre = args, pre
        self.recomputed: set[Path] = set()  # with --fresh, each output is recomputed once per run

    def run(self, attack: str, poisoned: Path, command: tuple[str, ...]) -> tuple[Path, float] | None:
        """The output and wall seconds of `command` on `poisoned` (None: not cached and --cached-only)."""
        source, teacher_seconds, name = poisoned, 0.0, slug(command)
        finetune = _flag(command, "--finetune")
        if command[0] == "distill" and finetune not in (None, NO_FINETUNE) and _flag(command, "--student") != "raw":
            teacher_run = teacher_command(finetune, _values(command, "--finetune-option"))
            teacher = self.run(attack, poisoned, teacher_run)
            if teacher is None:
                return None
            source, teacher_seconds = teacher
            command = _without(_with_flag(command, "--finetune", NO_FINETUNE), "--finetune-option")
            name = f"{slug(teacher_run)}_then_{slug(command)}"
        arch = "" if self.args.arch == "resnet18-cifar-w16" else f"_{self.args.arch}"  # the default keeps old keys
        out = self.args.out_dir / f"defense_{attack}_{self.args.downstream}{arch}_{name}.safetensors"
        timing = out.with_suffix(".seconds")
        if self.args.cached_only and not timing.exists():
            return None
        if not out.exists() or (self.args.fresh and out not in self.recomputed):
            started = time.perf_counter()
            cli(command[0], str(source), *command[1:], "--data", self.pre, "--out", str(out), device=self.args.device)
            timing.write_text(f"{time.perf_counter() - started:.1f}")
            self.recomputed.add(out)
            print(f"{attack}: {' '.join(command)} in {timing.read_text()} s", flush=True)
        return out, teacher_seconds + float(timing.read_text())


def _flag(command: tuple[str, ...], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def _with_flag(command: tuple[str, ...], flag: str, value: str) -> tuple[str, ...]:
    at = command.index(flag) + 1
    return (*command[:at], value, *command[at + 1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--pretrain-family", choices=FAMILIES, default="shapes")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--downstream", choices=FAMILIES, default="glyphs")
    parser.add_argument("--arch", default="resnet18-cifar-w16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/cache"))
    parser.add_argument("--fresh", action="store_true", help="recompute cached defense outputs")
    parser.add_argument("--cached-only", action="store_true", help="compute nothing new: tabulate what is cached")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    clean = clean_encoder(args)
    pre = f"builtin:{args.pretrain_family}"
    down = f"builtin:{args.downstream}"
    settings = {name: command for table in args.tables for name, command in TABLES[table].items()}
    runner = DefenseRunner(args, pre)

    rows: list[dict] = []
    for attack in args.attacks:
        poisoned = args.out_dir / f"poisoned_{attack}_{args.pretrain_family}_to_{args.downstream}_{args.arch}.safetensors"
        if not poisoned.exists():
            cli("poison", str(clean), "--attack", attack, "--trigger", TRIGGERS[attack], "--target-class",
                str(TARGET_CLASS), "--data", pre, "--reference-data", down, "--out", str(poisoned), device=args.device)
        outputs: dict[str, tuple[Path, float | None]] = {}
        for name, command in settings.items():
            result = (poisoned, None) if command is None else runner.run(attack, poisoned, command)
            if result is not None:
                outputs[name] = result
        names = list(outputs)
        report = cli("evaluate", str(clean), *(str(outputs[n][0]) for n in names), "--data", down, "--trigger",
                     TRIGGERS[attack], "--target-class", str(TARGET_CLASS), device=args.device)
        base, *results = report["encoders"]
        rows.append({"attack": attack, "setting": "clean encoder", "acc": base["acc"], "asr": base["asr"],
                     "asr_nontarget": base["asr_nontarget"], "seconds": None})
        for name, result in zip(names, results):
            rows.append({"attack": attack, "setting": name, "acc": result["acc"], "asr": result["asr"],
                         "asr_nontarget": result["asr_nontarget"], "seconds": outputs[name][1]})

    print(f"\n{args.arch}, pre-trained on {pre} ({args.pretrain_epochs} epochs), defenses on its 5% clean subset, "
          f"linear probe on {down}, target class {TARGET_CLASS}, device {args.device}")
    for table in ["clean"] + args.tables:
        names = ["clean encoder"] if table == "clean" else list(TABLES[table])
        print_table(table, names, rows, args.attacks)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


def print_table(title: str, names: list[str], rows: list[dict], attacks: list[str]) -> None:
    print(f"\n## {title}: ACC / ASR / ASR non-target (%), seconds of the defense per attack")
    print("| setting | " + " | ".join(attacks) + " | mean ACC | mean ASR | mean ASR-nt |")
    print("| --- |" + " ---: |" * (len(attacks) + 3))
    for name in names:
        cells, picked = [], []
        for attack in attacks:
            row = next((r for r in rows if r["attack"] == attack and r["setting"] == name), None)
            if row is None:
                cells.append("-")
                continue
            picked.append(row)
            seconds = f" ({row['seconds']:.0f} s)" if row["seconds"] is not None else ""
            cells.append(f"{row['acc']:.2f} / {row['asr']:.2f} / {row['asr_nontarget']:.2f}{seconds}")
        means = [sum(r[k] for r in picked) / len(picked) if picked else float("nan")
                 for k in ("acc", "asr", "asr_nontarget")]
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
