"""Paper-style tables: how much of each backdoor does every defense remove, and at what accuracy cost?

For each attack (BadEncoder, DRUPE, BASSL, CTRL) the poisoned encoder comes from benchmarks/attacks.py's
cache (made with `poison` when missing). Each defense runs what its command (`purify` or `distill`) runs,
through the Python API in-process, on the defender's 5% clean subset of the pre-training family; every
encoder is evaluated with a linear probe on the downstream family with the attack's own trigger. Outputs are cached per (attack, setting), so a
rerun only computes what is missing (`--fresh` recomputes).

    python benchmarks/defense_study.py [--tables main teachers students losses families longer-ft] [--attacks ...]
        [--downstream glyphs] [--arch resnet18-cifar-w16] [--device cpu] [--json-out rows.json]
        [--publish [--load TEXT]]

Tables (the seed paper's): `main` (no defense, fine-tune-only baseline, the paper's recommended setting
FT teacher + warm-up student + attention loss, and our recommended `distill` defaults), `teachers`
(each purify method), `students` (each student with the FT teacher and AT), `losses` (each loss with
the FT teacher and the warm-up student), `families` (each family's recommended recipe on this
architecture), `longer-ft` (the convnet recipe with a 150-epoch teacher fine-tune). Targets
for the recommended recipe: mean ASR <= 5%, ACC at most 2 points below the undefended encoder, ASR
below the fine-tune-only baseline. With --publish each printed table goes to benchmarks/RESULTS.md
(sections `defense-study-TABLE`, `defense-study-clean` for the clean encoder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Union

from attacks import ATTACKS, FAMILIES, TARGET_CLASS, TRIGGERS, clean_encoder

import encoder_clean as ec
from encoder_clean.distill.recipe import NO_FINETUNE, PAPER, RECOMMENDED, RECOMMENDED_TRANSFORMER, Recipe
from results import add_publish_arguments, publish

LOSSES = ("at", "nad", "afd", "fitnet", "cc", "kd", "sp", "similarity", "rkd", "pkt")
MEANS = (("acc", "mean ACC"), ("asr", "mean ASR"), ("asr_nontarget", "mean ASR-nt"))
Defense = Union[ec.PurifyConfig, ec.DistillConfig]


def recipe_defense(recipe: Recipe) -> ec.DistillConfig:
    """A recipe as explicit `distill` settings (so equal recipes share one cached output)."""
    return ec.DistillConfig(student=recipe.student, losses=recipe.losses, finetune=recipe.finetune,
                            options=recipe.options, finetune_options=recipe.finetune_options)


def teacher_defense(method: str, options: tuple[str, ...] = ()) -> ec.PurifyConfig:
    return ec.PurifyConfig(method=method, options=options)


def command_words(defense: Defense) -> tuple[str, ...]:
    """The command line that runs `defense` (after its input checkpoint): it names the cached output, as it
    did when this study ran the commands, so those outputs are still found."""
    if isinstance(defense, ec.PurifyConfig):
        return ("purify", "--method", defense.method, *_repeated("--option", defense.options))
    return ("distill", "--finetune", str(defense.finetune), "--student", str(defense.student),
            *_repeated("--loss", defense.losses or ()), *_repeated("--option", defense.options),
            *_repeated("--finetune-option", defense.finetune_options))


def _repeated(flag: str, values: Iterable[str]) -> tuple[str, ...]:
    return tuple(word for value in values for word in (flag, value))


def run_defense(defense: Defense, encoder: Path, data: str, device: str) -> ec.TrainResult:
    if isinstance(defense, ec.PurifyConfig):
        return ec.purify(encoder, data, defense, device=device)
    return ec.distill(encoder, data, defense, device=device)


# setting name -> the defense run on the poisoned encoder (None: the undefended encoder itself)
TABLES: dict[str, dict[str, Defense | None]] = {
    "main": {
        "poisoned (no defense)": None,
        "fine-tune only (purify ft)": teacher_defense("ft"),
        "paper: FT + warm-up + AT": recipe_defense(PAPER),
        "recommended (distill defaults)": recipe_defense(RECOMMENDED),
    },
    "teachers": {f"purify {m}": teacher_defense(m) for m in ("ft", "fp", "anp", "moth")},
    "students": {f"student {s}": recipe_defense(Recipe("ft", s, ("at",))) for s in ("raw", "void", "warmup")},
    "losses": {f"loss {name}": recipe_defense(Recipe("ft", "warmup", (name,))) for name in LOSSES},
    # the transformer recipe (chosen on a small ViT, benchmarks/vit_study.py) on the convnets
    "families": {"convnet recipe (ResNet default)": recipe_defense(RECOMMENDED),
                 "transformer recipe": recipe_defense(RECOMMENDED_TRANSFORMER)},
    # the convnet recipe with the transformer recipe's longer teacher fine-tune
    "longer-ft": {"convnet recipe, FT 150 epochs": recipe_defense(
        Recipe("ft", "warmup", RECOMMENDED.losses, RECOMMENDED.options, ("epochs=150",)))},
}


def slug(defense: Defense) -> str:
    return "".join(c if c.isalnum() else "_" for c in "_".join(command_words(defense))).strip("_")


class DefenseRunner:
    """Runs each defense once per attack, caching the output and its wall time on disk.

    A `distill --finetune M` whose student is not the raw copy of the poisoned encoder only needs the
    poisoned encoder as its teacher's starting point, so it distils from the cached `purify --method M`
    output with `--finetune none`; the reported seconds are the teacher's plus the distillation's.
    """

    def __init__(self, args: argparse.Namespace, pre: str):
        self.args, self.pre = args, pre
        self.recomputed: set[Path] = set()  # with --fresh, each output is recomputed once per run

    def run(self, attack: str, poisoned: Path, defense: Defense) -> tuple[Path, float] | None:
        """The output and wall seconds of `defense` on `poisoned` (None: not cached and --cached-only)."""
        source, teacher_seconds, name = poisoned, 0.0, slug(defense)
        if (isinstance(defense, ec.DistillConfig) and defense.finetune not in (None, NO_FINETUNE)
                and defense.student != "raw"):
            teacher_run = teacher_defense(defense.finetune, tuple(defense.finetune_options))
            teacher = self.run(attack, poisoned, teacher_run)
            if teacher is None:
                return None
            source, teacher_seconds = teacher
            defense = replace(defense, finetune=NO_FINETUNE, finetune_options=())
            name = f"{slug(teacher_run)}_then_{slug(defense)}"
        arch = "" if self.args.arch == "resnet18-cifar-w16" else f"_{self.args.arch}"  # the default keeps old keys
        out = self.args.out_dir / f"defense_{attack}_{self.args.downstream}{arch}_{name}.safetensors"
        timing = out.with_suffix(".seconds")
        if self.args.cached_only and not timing.exists():
            return None
        if not out.exists() or (self.args.fresh and out not in self.recomputed):
            started = time.perf_counter()
            run_defense(defense, source, self.pre, self.args.device).save(out)
            timing.write_text(f"{time.perf_counter() - started:.1f}")
            self.recomputed.add(out)
            print(f"{attack}: {' '.join(command_words(defense))} in {timing.read_text()} s", flush=True)
        return out, teacher_seconds + float(timing.read_text())


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
    add_publish_arguments(parser)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    clean = clean_encoder(args)
    pre = f"builtin:{args.pretrain_family}"
    down = f"builtin:{args.downstream}"
    settings = {name: defense for table in args.tables for name, defense in TABLES[table].items()}
    runner = DefenseRunner(args, pre)

    rows: list[dict] = []
    for attack in args.attacks:
        poisoned = args.out_dir / f"poisoned_{attack}_{args.pretrain_family}_to_{args.downstream}_{args.arch}.safetensors"
        if not poisoned.exists():
            config = ec.PoisonConfig(attack=attack, trigger=TRIGGERS[attack], target_class=TARGET_CLASS,
                                     reference_data=down)
            ec.poison(clean, pre, config, device=args.device).save(poisoned)
        outputs: dict[str, tuple[Path, float | None]] = {}
        for name, defense in settings.items():
            result = (poisoned, None) if defense is None else runner.run(attack, poisoned, defense)
            if result is not None:
                outputs[name] = result
        names = list(outputs)
        report = ec.evaluate([clean, *(outputs[n][0] for n in names)], down,
                             ec.EvalConfig(trigger=TRIGGERS[attack], target_class=TARGET_CLASS), device=args.device)
        base, *results = report.as_dict()["encoders"]
        rows.append({"attack": attack, "setting": "clean encoder", "acc": base["acc"], "asr": base["asr"],
                     "asr_nontarget": base["asr_nontarget"], "seconds": None})
        for name, result in zip(names, results):
            rows.append({"attack": attack, "setting": name, "acc": result["acc"], "asr": result["asr"],
                         "asr_nontarget": result["asr_nontarget"], "seconds": outputs[name][1]})

    setup = (f"{args.arch}, pre-trained on {pre} ({args.pretrain_epochs} epochs), defenses on its 5% clean subset, "
             f"linear probe on {down}, target class {TARGET_CLASS}, device {args.device}")
    print(f"\n{setup}")
    for table in ["clean"] + args.tables:
        names = ["clean encoder"] if table == "clean" else list(TABLES[table])
        summary = summary_rows(names, rows, args.attacks)
        print_table(table, summary, args.attacks)
        if args.publish:
            publish_table(table, summary, args, setup)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


def summary_rows(names: list[str], rows: list[dict], attacks: list[str]) -> list[dict]:
    """A row per setting: each attack's `ACC / ASR / ASR-nt (seconds)` cell and the means over the attacks
    (None where no attack has the setting)."""
    summary = []
    for name in names:
        found = {a: next((r for r in rows if r["attack"] == a and r["setting"] == name), None) for a in attacks}
        picked = [row for row in found.values() if row is not None]
        summary.append({"setting": name, **{a: attack_cell(row) for a, row in found.items()},
                        **{f"mean_{key}": round(sum(r[key] for r in picked) / len(picked), 2) if picked else None
                           for key, _ in MEANS}})
    return summary


def attack_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    seconds = f" ({row['seconds']:.0f} s)" if row["seconds"] is not None else ""
    return f"{row['acc']:.2f} / {row['asr']:.2f} / {row['asr_nontarget']:.2f}{seconds}"


def publish_table(table: str, summary: list[dict], args: argparse.Namespace, setup: str) -> None:
    columns = [("setting", "setting"), *((a, a) for a in args.attacks),
               *((f"mean_{key}", header) for key, header in MEANS)]
    publish(f"defense-study-{table}", f"Defenses, table `{table}`: ACC / ASR / ASR non-target (%)", summary,
            columns, load=args.load,
            notes=f"{setup}. Each cell: ACC / ASR / ASR non-target and the defense's seconds; means over the attacks.")


def print_table(title: str, summary: list[dict], attacks: list[str]) -> None:
    print(f"\n## {title}: ACC / ASR / ASR non-target (%), seconds of the defense per attack")
    print("| setting | " + " | ".join(attacks) + " | mean ACC | mean ASR | mean ASR-nt |")
    print("| --- |" + " ---: |" * (len(attacks) + 3))
    for row in summary:
        means = [float("nan") if row[f"mean_{key}"] is None else row[f"mean_{key}"] for key, _ in MEANS]
        print(f"| {row['setting']} | " + " | ".join(row[a] for a in attacks) + " | "
              + " | ".join(f"{m:.2f}" for m in means) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
