"""The Python API: every command of the `encoder-clean` CLI as a function, on objects or spec strings.

    import encoder_clean as ec

    clean = ec.pretrain("builtin:shapes", ec.PretrainConfig(epochs=1))
    poisoned = ec.poison(clean, "builtin:shapes", ec.PoisonConfig(reference_data="builtin:glyphs"))
    report = ec.evaluate([clean, poisoned], "builtin:glyphs")
    print(report.encoders[1].asr)

Inputs are objects (encoders, datasets, triggers, config dataclasses) or the spec strings the CLI takes
(`path.safetensors`, `hf://OWNER/REPO`, `builtin:glyphs`, `white-square`). Results are dataclasses.
Functions never print; long work reports progress to an optional callback (`ProgressEvent`) or to an
object with the `encoder_clean.runtime.Progress` interface. Encoders passed in are never changed: the
training functions work on a copy. The CLI commands are these functions with option parsing and
rendering around them, so the same inputs and seed give the same bytes through either.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, Union

import torch

from encoder_clean.data.augment import augmentation
from encoder_clean.data.dataset import Dataset, Split
from encoder_clean.data.specs import check_spec, class_count
from encoder_clean.data.specs import load_data as _load_data_spec
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.base import Encoder
from encoder_clean.encoders.export import FORMATS, export_folder
from encoder_clean.encoders.io import LoadedEncoder
from encoder_clean.encoders.io import load_encoder as _load_encoder_source
from encoder_clean.encoders.io import produced_by
from encoder_clean.encoders.io import save_encoder as _save_safetensors
from encoder_clean.errors import UserError
from encoder_clean.options import apply_options, describe_options, to_assignments
from encoder_clean.provenance import Provenance, provenance
from encoder_clean.runtime import (NULL_PROGRESS, Advance, Progress, place_images, prepare_model, resolve_device,
                                   seed_everything)
from encoder_clean.scan import ScanOutcome, run_scan, scan_config
from encoder_clean.triggers import Trigger
from encoder_clean.triggers import load_trigger as _load_trigger_spec

EncoderLike = Union[str, os.PathLike, Encoder, LoadedEncoder, "TrainResult"]
DataLike = Union[str, Dataset]
TriggerLike = Union[str, Trigger]
Settings = Union[Mapping[str, object], Sequence[str]]  # {"steps": 300} or ["steps=300"]
DeviceLike = Union[str, torch.device]


# ------------------------------------------------------------------------------ progress
@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long task: `done` of `total` units (None: unknown), and figures such as the loss."""

    task: str
    done: int
    total: int | None
    fields: Mapping[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]
ProgressLike = Union[ProgressCallback, Progress, None]


class CallbackProgress:
    """The library's `Progress` interface over a plain callback: one event when a task opens, one per step."""

    def __init__(self, callback: ProgressCallback):
        self.callback = callback

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        done = 0
        self.callback(ProgressEvent(description, 0, total))

        def advance(n: int = 1, **fields: float) -> None:
            nonlocal done
            done += n
            self.callback(ProgressEvent(description, done, total, dict(fields)))

        yield advance


def as_progress(progress: ProgressLike) -> Progress:
    if progress is None:
        return NULL_PROGRESS
    if hasattr(progress, "task"):
        return progress  # type: ignore[return-value]
    return CallbackProgress(progress)  # type: ignore[arg-type]


def _device(device: DeviceLike) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


# ------------------------------------------------------------------------------ inputs
def load_encoder(source: EncoderLike, *, arch: str | None = None, prefix: str | None = None,
                 device: DeviceLike = "cpu") -> LoadedEncoder:
    """An encoder with what its file records: a checkpoint path, a timm/transformers model folder or
    `hf://OWNER/REPO[/PATH][@REV]`. A `TrainResult` brings the settings it would be saved with; a bare
    `Encoder` is wrapped as it is (no file, no recorded settings). `arch` names the architecture of a file
    that does not record it; `prefix` the network to take from a file that holds several."""
    if isinstance(source, LoadedEncoder):
        return source
    if isinstance(source, TrainResult):  # what it would record once saved (the attack, for `evaluate`)
        return LoadedEncoder(source.encoder, f"<{source.encoder.arch}>", Path(), "",
                             source.provenance.metadata(source.encoder))
    if isinstance(source, Encoder):
        return LoadedEncoder(source, f"<{source.arch}>", Path(), "")
    return _load_encoder_source(os.fspath(source), arch=arch, device=device, prefix=prefix)


def load_data(spec: DataLike, progress: ProgressLike = None) -> Dataset:
    """A dataset from a data spec (`builtin:glyphs`, `cifar10:ROOT`, `folder:ROOT`, `npz:PATH`, ...)."""
    return spec if isinstance(spec, Dataset) else _load_data_spec(spec, as_progress(progress))


def load_trigger(spec: TriggerLike, image_size: int = 32) -> Trigger:
    """A trigger from a spec (`white-square`, `checkerboard:8@2,2`, `ctrl:50`, `FILE.png`, `FILE.npz`) for
    images of `image_size` pixels."""
    return spec if isinstance(spec, Trigger) else _load_trigger_spec(spec, image_size)


def _working_copy(loaded: LoadedEncoder, device: torch.device) -> Encoder:
    """The encoder to train: a copy, so that what the caller passed in stays as it was."""
    return prepare_model(copy.deepcopy(loaded.encoder), device)


# ------------------------------------------------------------------------------ training results
@dataclass
class TrainResult:
    """A trained (pretrained, poisoned or cleaned) encoder with its provenance and what the run measured."""

    encoder: Encoder
    provenance: Provenance
    report: dict[str, object]  # the run's settings and figures, as the CLI's --json gives them
    seconds: float

    def save(self, path: str | os.PathLike, format: str = "safetensors") -> str:
        """Write the encoder with its provenance; returns the SHA-256 of the written file."""
        return save_encoder(self, path, format=format)


def save_encoder(encoder: TrainResult | Encoder, path: str | os.PathLike, *, format: str = "safetensors",
                 provenance: Provenance | None = None) -> str:
    """Write an encoder as `.safetensors` with provenance metadata (atomically), or with `format` `timm` or
    `transformers` as a new folder in that library's layout. Returns the SHA-256 of the weights file."""
    if isinstance(encoder, TrainResult):
        model, provenance = encoder.encoder, provenance or encoder.provenance
    else:
        model, provenance = encoder, provenance or Provenance(produced_by("python api"))
    if format not in FORMATS:
        raise UserError(f"format {format}: choose one of {', '.join(FORMATS)}")
    if format == "safetensors":
        return _save_safetensors(model, path, produced_by=provenance.produced_by,
                                 parent_sha256=provenance.parent_sha256, settings=provenance.settings)
    return export_folder(model, Path(path), format, provenance.metadata(model))


# ------------------------------------------------------------------------------ pretrain
@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pre-training of a new encoder (`encoder-clean list methods`)."""

    arch: str = "resnet18-cifar-w16"
    method: str = "simclr"  # simclr, mocov2, byol
    epochs: int = 2  # 0: the random initialisation
    batch_size: int = 128
    lr: float = 3e-3  # peak AdamW learning rate (warm-up, then cosine decay)
    warmup_steps: int = 20  # linear warm-up of the learning rate, at most a tenth of the run
    augment: str = "strong"  # or "simclr" (the SimCLR CIFAR recipe)
    options: Settings = ()  # the method's settings

    def check(self) -> None:
        if self.epochs < 0:
            raise UserError(f"epochs {self.epochs}: must be 0 or more")
        if not self.lr > 0:
            raise UserError(f"lr {self.lr}: must be positive")
        if self.warmup_steps < 0:
            raise UserError(f"warmup_steps {self.warmup_steps}: must be 0 or more")


def pretrain(data: DataLike, config: PretrainConfig = PretrainConfig(), *, device: DeviceLike = "auto",
             seed: int = 0, progress: ProgressLike = None) -> TrainResult:
    """Pre-train a clean encoder of `config.arch` on the training split of `data`."""
    from encoder_clean.pretrain import PretrainLoopConfig, get_method, pretrain_encoder

    config.check()
    started = time.perf_counter()
    assignments = to_assignments(config.options)
    method_settings = get_method(config.method).settings(assignments)  # a bad method or setting, up front
    loop = PretrainLoopConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                              warmup_steps=config.warmup_steps, augment=augmentation(config.augment),
                              method=config.method, options=tuple(assignments))
    torch_device = _device(device)
    seed_everything(seed)
    dataset = load_data(data, progress)
    encoder = prepare_model(create_encoder(config.arch), torch_device)
    stats: dict[str, object] = {"method": config.method, "steps": 0, "final_loss": None}
    if config.epochs > 0:
        stats = pretrain_encoder(encoder, place_images(dataset.train.images, torch_device), loop, seed=seed,
                                 device=torch_device, progress=as_progress(progress),
                                 description=f"pretrain {config.arch} ({config.method})")
    recipe = {"data": dataset.name, "arch": config.arch, "method": config.method,
              "option": " ".join(assignments) or None, "epochs": config.epochs, "batch_size": config.batch_size,
              "lr": config.lr, "warmup_steps": config.warmup_steps, "augment": config.augment, "seed": seed}
    settings = {"method": config.method, "method_settings": describe_options(method_settings), "data": dataset.name,
                "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
                "warmup_steps": config.warmup_steps, "augment": config.augment, "seed": seed}
    return TrainResult(encoder, provenance("pretrain", recipe, settings),
                       {"arch": config.arch, "data": dataset.name, **stats}, _since(started))


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


# ------------------------------------------------------------------------------ poison
@dataclass(frozen=True)
class PoisonConfig:
    """An attack (`encoder-clean list attacks`) and its settings: a preset, then flags, then `options`."""

    attack: str = "badencoder"
    trigger: str | None = None  # default: the attack's (white-square; ctrl for CTRL)
    target_class: int = 0
    reference_data: DataLike | None = None  # data whose class-K training images are the references (default: data)
    preset: str = "fast"  # or "published"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    num_references: int | None = None
    options: Settings = ()


def poison(encoder: EncoderLike, data: DataLike, config: PoisonConfig = PoisonConfig(), *,
           arch: str | None = None, device: DeviceLike = "auto", seed: int = 0,
           progress: ProgressLike = None) -> TrainResult:
    """Implant a backdoor into (a copy of) `encoder` with shadow data `data`, so that triggered images
    embed like class `config.target_class` of the reference data."""
    from encoder_clean.attacks import AttackInputs, get_attack
    from encoder_clean.attacks.registry import image_hashes

    started = time.perf_counter()
    if config.target_class < 0:
        raise UserError(f"target class {config.target_class}: must be 0 or more")
    spec = get_attack(config.attack)
    assignments = to_assignments({"epochs": config.epochs, "lr": config.lr, "batch_size": config.batch_size,
                                  "num_references": config.num_references}) + to_assignments(config.options)
    settings = apply_options(spec.preset(config.preset), assignments, f"attack {config.attack}")
    torch_device = _device(device)
    loaded = load_encoder(encoder, arch=arch)
    trigger_spec = config.trigger or spec.default_trigger
    load_trigger(trigger_spec, loaded.encoder.image_size)  # fail on a bad trigger before any long work
    given = config.reference_data
    for named in (data, given):
        if isinstance(named, str):
            check_spec(named)
    check_target_class(config.target_class, data if given is None else given)
    shadow = load_data(data, progress)
    reference_spec = given.name if isinstance(given, Dataset) else given
    references = shadow if given is None or reference_spec == shadow.name else load_data(given)
    check_target_class(config.target_class, references)
    seed_everything(seed)
    model = _working_copy(loaded, torch_device)
    target_images = references.train.images[references.train.labels == config.target_class]
    inputs = AttackInputs(model, place_images(shadow.train.images, torch_device), target_images.to(torch_device),
                          trigger_spec, config.target_class, torch_device, seed, as_progress(progress))
    outcome = spec.run(inputs, settings)
    recipe = {"attack": config.attack, "preset": config.preset, "trigger": trigger_spec,
              "target_class": config.target_class, "data": shadow.name, "reference_data": reference_spec,
              "option": " ".join(assignments) or None, "seed": seed}
    recorded = {"attack": config.attack, "preset": config.preset, "trigger": trigger_spec,
                "target_class": config.target_class, "data": shadow.name,
                "reference_data": reference_spec or shadow.name,
                "references_sha256": image_hashes(outcome.references),
                "attack_settings": describe_options(settings), "seed": seed, **outcome.extra_metadata}
    report = {"attack": config.attack, "preset": config.preset, "trigger": trigger_spec,
              "target_class": config.target_class, "settings": describe_options(settings),
              "references": len(outcome.references), **outcome.stats}
    return TrainResult(model, provenance("poison", recipe, recorded, parent=loaded), report, _since(started))


# ------------------------------------------------------------------------------ the defender's data
@dataclass
class DefenderData:
    """The defender's clean subset on the compute device, the class count, and what the sample was."""

    split: Split
    num_classes: int
    sample: dict[str, object]  # size, seed, per-class counts and hash, for JSON and checkpoint metadata


def defender_data(data: DataLike, fraction: float, device: DeviceLike, seed: int,
                  progress: ProgressLike = None) -> DefenderData:
    """The defender's clean subset of `data`: a seeded, class-balanced `fraction` of the training split
    (encoder_clean.data.sampling). Only this subset goes to a defense: never the test split."""
    from encoder_clean.data.sampling import clean_subset, fraction_count

    fraction_count(1, fraction, "clean fraction")  # the range, checked before the data is read
    dataset = load_data(data, progress)
    sample = clean_subset(dataset, fraction, seed)
    return DefenderData(sample.split.to(_device(device)), dataset.num_classes, sample.describe(dataset.class_names))


# ------------------------------------------------------------------------------ purify
@dataclass(frozen=True)
class PurifyConfig:
    """A teacher-side defense (`encoder-clean list defenses`): flags, then `options`, over its defaults."""

    method: str = "ft"  # ft, fp, anp, moth
    clean_fraction: float = 0.05
    epochs: int | None = None
    lr: float | None = None
    options: Settings = ()


def purify(encoder: EncoderLike, data: DataLike, config: PurifyConfig = PurifyConfig(), *,
           arch: str | None = None, device: DeviceLike = "auto", seed: int = 0,
           progress: ProgressLike = None) -> TrainResult:
    """Clean (a copy of) `encoder` with a teacher-side defense on the defender's clean subset of `data`."""
    from encoder_clean.defenses import DefenseInputs
    from encoder_clean.defenses.registry import run_defense

    started = time.perf_counter()
    assignments = to_assignments({"epochs": config.epochs, "lr": config.lr}) + to_assignments(config.options)
    torch_device = _device(device)
    loaded = load_encoder(encoder, arch=arch)
    seed_everything(seed)
    model = _working_copy(loaded, torch_device)
    defender = defender_data(data, config.clean_fraction, torch_device, seed, progress)
    clean = defender.split
    settings, outcome = run_defense(config.method, DefenseInputs(
        model, clean.images, clean.labels, defender.num_classes, torch_device, seed, as_progress(progress)), assignments)
    data_name = _data_name(data)
    recipe = {"method": config.method, "data": data_name, "clean_fraction": config.clean_fraction,
              "option": " ".join(assignments) or None, "seed": seed}
    recorded = {"defense": config.method, "defense_settings": describe_options(settings), "data": data_name,
                "clean_fraction": config.clean_fraction, "clean_images": len(clean),
                "clean_sample": defender.sample, "seed": seed, **outcome.extra_metadata}
    report = {"method": config.method, "settings": describe_options(settings), "clean_images": len(clean),
              "clean_sample": defender.sample, **outcome.stats}
    return TrainResult(model, provenance("purify", recipe, recorded, parent=loaded, inherit_attack=True), report,
                       _since(started))


def _data_name(data: DataLike) -> str:
    return data.name if isinstance(data, Dataset) else data


def check_target_class(target: int, data: DataLike) -> None:
    """A target class the data does not have is a usage error. On a spec this runs before the data is read
    where the format counts classes cheaply (every built-in format does); on a Dataset it always runs."""
    count = data.num_classes if isinstance(data, Dataset) else class_count(data)
    if count is not None and not 0 <= target < count:
        raise UserError(f"target class {target} is outside 0..{count - 1} for {_data_name(data)}")


# ------------------------------------------------------------------------------ distill
@dataclass(frozen=True)
class DistillConfig:
    """A distillation recipe; what is left None comes from the recommended recipe for the teacher's
    family (`encoder_clean.distill.recipe.recommended_for`), and explicit values win over it."""

    student: str | None = None  # teacher, warmup, void (`encoder-clean list students`)
    losses: Sequence[str] | None = None  # NAME[=WEIGHT][@TAP,...] specs (`encoder-clean list losses`)
    finetune: str | None = None  # a purify method run on the teacher first, or "none"
    clean_fraction: float = 0.05
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    student_arch: str | None = None  # of a void or warm-up student (default: the teacher's)
    options: Settings = ()  # distillation settings
    finetune_options: Settings = ()  # settings of the `finetune` method


@dataclass(frozen=True)
class DistillPlan:
    """A `DistillConfig` with the recommended recipe filled in: what will actually run."""

    student: str
    losses: tuple[str, ...]
    finetune: str
    options: tuple[str, ...]
    finetune_options: tuple[str, ...]


def distill_plan(teacher: Encoder, config: DistillConfig) -> DistillPlan:
    """What the user leaves out comes from the recommended recipe for the teacher's family: its
    distillation settings apply with its losses, its teacher settings with its teacher defense, and
    explicit values win over both."""
    from encoder_clean.distill.recipe import recommended_for

    default = recommended_for(teacher)
    base = list(default.options) if config.losses is None else []
    flags = to_assignments({"epochs": config.epochs, "lr": config.lr, "batch_size": config.batch_size})
    finetune_base = list(default.finetune_options) if config.finetune is None else []
    return DistillPlan(config.student or default.student,
                       tuple(config.losses) if config.losses else tuple(default.losses),
                       config.finetune or default.finetune,
                       tuple(base + flags + to_assignments(config.options)),
                       tuple(finetune_base + to_assignments(config.finetune_options)))


def distill(teacher: EncoderLike, data: DataLike, config: DistillConfig = DistillConfig(), *,
            arch: str | None = None, device: DeviceLike = "auto", seed: int = 0,
            progress: ProgressLike = None) -> TrainResult:
    """Distil a clean student from `teacher` on the defender's clean subset of `data`."""
    from encoder_clean.distill.recipe import clean_with_distillation

    started = time.perf_counter()
    torch_device = _device(device)
    loaded = load_encoder(teacher, arch=arch)
    plan = distill_plan(loaded.encoder, config)
    seed_everything(seed)
    model = _working_copy(loaded, torch_device)
    defender = defender_data(data, config.clean_fraction, torch_device, seed, progress)
    clean = defender.split
    result = clean_with_distillation(model, clean.images, clean.labels, defender.num_classes,
                                     finetune=plan.finetune, student=plan.student, losses=plan.losses,
                                     options=plan.options, finetune_options=plan.finetune_options,
                                     student_arch=config.student_arch, device=torch_device, seed=seed,
                                     progress=as_progress(progress))
    data_name = _data_name(data)
    recipe = {"student": plan.student, "loss": " ".join(plan.losses), "finetune": plan.finetune, "data": data_name,
              "clean_fraction": config.clean_fraction, "option": " ".join(plan.options) or None,
              "finetune_option": " ".join(plan.finetune_options) or None, "seed": seed}
    recorded = {"defense": "distill", **result.settings, "data": data_name, "clean_fraction": config.clean_fraction,
                "clean_images": len(clean), "clean_sample": defender.sample, "seed": seed}
    report = {**result.settings, "clean_images": len(clean), "clean_sample": defender.sample, **result.stats}
    return TrainResult(result.student, provenance("distill", recipe, recorded, parent=loaded, inherit_attack=True),
                       report, _since(started))


# ------------------------------------------------------------------------------ evaluate
DEFAULT_TRIGGER = "white-square"
DEFAULT_TARGET = 0


@dataclass(frozen=True)
class EvalConfig:
    """The downstream protocol: a probe on frozen features, and the attack whose success is measured."""

    trigger: TriggerLike | None = None  # default: what the checkpoints record, else white-square
    target_class: int | None = None  # default: what the checkpoints record, else 0
    probe: str = "linear"  # or "mlp" (the BadEncoder protocol's classifier)
    probe_epochs: int | None = None  # default 100


@dataclass(frozen=True)
class EncoderEval:
    """Clean accuracy and attack success of one encoder, in percent."""

    source: str
    sha256: str
    arch: str
    acc: float  # clean test accuracy
    asr: float  # triggered test images classified as the target, over all test images
    asr_nontarget: float  # the same over test images whose label is not the target

    def as_dict(self) -> dict[str, object]:
        return {key: round(value, 2) if isinstance(value, float) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class EvalResult:
    """`evaluate`'s answer: the protocol it used and one `EncoderEval` per encoder, in order."""

    data: str
    trigger: str
    target_class: int
    probe: str
    probe_epochs: int  # MLP epochs or L-BFGS iterations
    encoders: list[EncoderEval]

    def as_dict(self) -> dict[str, object]:
        return {"data": self.data, "trigger": self.trigger, "target_class": self.target_class, "probe": self.probe,
                "probe_epochs": self.probe_epochs, "encoders": [row.as_dict() for row in self.encoders]}


def evaluate(encoders: EncoderLike | Sequence[EncoderLike], data: DataLike, config: EvalConfig = EvalConfig(), *,
             arch: str | None = None, device: DeviceLike = "auto", seed: int = 0,
             progress: ProgressLike = None) -> EvalResult:
    """Train a probe on each encoder's frozen features of `data`'s training split; measure ACC and ASR on
    its test split. The trigger and target class default to what the checkpoints record. Every setting is
    checked before the data is read."""
    from encoder_clean.evaluate.metrics import evaluate_encoder
    from encoder_clean.evaluate.probe import probe_config

    probe = probe_config(config.probe, config.probe_epochs)
    torch_device = _device(device)
    seed_everything(seed)
    many = encoders if isinstance(encoders, (list, tuple)) else [encoders]
    loaded = [load_encoder(item, arch=arch) for item in many]
    trigger, target = attack_settings(loaded, config.trigger, config.target_class)
    stamps = trigger_stamps(trigger, loaded)
    check_target_class(target, data)
    dataset = load_data(data, progress)
    check_target_class(target, dataset)
    rows = []
    for item in loaded:
        model = _working_copy(item, torch_device)
        metrics = evaluate_encoder(model, dataset, stamps[model.image_size], target, probe, device=torch_device,
                                   seed=seed, progress=as_progress(progress))
        rows.append(EncoderEval(item.source, item.sha256, model.arch, metrics.acc, metrics.asr, metrics.asr_nontarget))
    spec = trigger if isinstance(trigger, str) else trigger.spec
    return EvalResult(dataset.name, spec, target, config.probe, probe.epochs, rows)


def trigger_stamps(trigger: TriggerLike, loaded: Sequence[LoadedEncoder]) -> dict[int, Trigger]:
    """The trigger at every input size among `loaded` (checked before any data is read)."""
    return {item.encoder.image_size: load_trigger(trigger, item.encoder.image_size) for item in loaded}


def attack_settings(loaded: Sequence[LoadedEncoder], trigger: TriggerLike | None,
                    target: int | None) -> tuple[TriggerLike, int]:
    """What is given wins; else what the checkpoints record (they must agree); else the defaults."""
    def recorded(key: str) -> str | None:
        values = {str(item.setting(key)) for item in loaded if item.setting(key) is not None}
        if len(values) > 1:
            raise UserError(f"the encoders record different {key.replace('_', ' ')}s ({', '.join(sorted(values))}); "
                            f"pass --{key.replace('_', '-')}")
        return values.pop() if values else None

    if trigger is None:
        trigger = recorded("trigger") or DEFAULT_TRIGGER
    if target is None:
        found = recorded("target_class")
        target = int(found) if found is not None else DEFAULT_TARGET
    if int(target) < 0:
        raise UserError(f"target class {target}: must be 0 or more")
    return trigger, int(target)


# ------------------------------------------------------------------------------ scan
@dataclass(frozen=True)
class ScanConfig:
    """A scan method (`encoder-clean list scans`), its threshold and settings, and the shadow images."""

    method: str = "encoder-clean"
    threshold: float | None = None  # default: the method's, calibrated on clean encoders
    shadow_images: int = 1000  # a class-balanced sample of the training split, drawn by the seed
    options: Settings = ()


@dataclass
class ScanResult(ScanOutcome):
    """`scan`'s verdict on one encoder: the method's outcome, and which encoder and shadow images it was."""

    source: str = ""
    sha256: str = ""
    arch: str = ""
    shadow_sample: dict[str, object] = field(default_factory=dict)
    example: torch.Tensor | None = None  # a shadow image (uint8), to show the trigger on

    def row(self) -> dict[str, object]:
        return {"source": self.source, "sha256": self.sha256, "arch": self.arch, **super().row()}


def shadow_images(data: DataLike, count: int, seed: int, progress: ProgressLike = None) -> tuple[torch.Tensor, dict]:
    """`count` clean shadow images of `data`'s training split (a class-balanced sample drawn by `seed`) and
    what the sample was."""
    from encoder_clean.data.sampling import balanced_sample

    if count < 2:
        raise UserError(f"shadow images: need at least 2, got {count}")
    dataset = load_data(data, progress)
    sample = balanced_sample(dataset.train, count, seed)
    if len(sample) < 2:
        raise UserError(f"data {dataset.name}: fewer than 2 training images")
    return sample.split.images, sample.describe(dataset.class_names)


def scan(encoder: EncoderLike, data: DataLike = "builtin", config: ScanConfig = ScanConfig(), *,
         arch: str | None = None, device: DeviceLike = "auto", seed: int = 0,
         progress: ProgressLike = None) -> ScanResult:
    """Is `encoder` backdoored? Runs the scan method on clean shadow images of `data` and judges the score
    against the threshold (encoder_clean.scan.run_scan)."""
    settings = scan_config(config.method, to_assignments(config.options))
    torch_device = _device(device)
    loaded = load_encoder(encoder, arch=arch)
    images, sample = shadow_images(data, config.shadow_images, seed, progress)
    seed_everything(seed)
    model = _working_copy(loaded, torch_device)
    outcome = run_scan(model, images, method=config.method, config=settings, threshold=config.threshold,
                       device=torch_device, seed=seed, progress=as_progress(progress))
    return ScanResult(**{f.name: getattr(outcome, f.name) for f in fields(outcome)}, source=loaded.source,
                      sha256=loaded.sha256, arch=model.arch, shadow_sample=sample, example=images[0])


__all__ = [
    "CallbackProgress", "DataLike", "DistillConfig", "EncoderEval", "EncoderLike", "EvalConfig", "EvalResult",
    "LoadedEncoder", "PoisonConfig", "PretrainConfig", "ProgressEvent", "Provenance", "PurifyConfig", "ScanConfig",
    "ScanResult", "Settings", "TrainResult", "TriggerLike", "distill", "evaluate", "load_data", "load_encoder",
    "load_trigger", "poison", "pretrain", "purify", "save_encoder", "scan",
]
