"""Student designs for `distill --student` (the seed paper's three):

- `raw`: a copy of the poisoned encoder as given (before any --finetune);
- `void`: a randomly initialised encoder;
- `warmup`: a randomly initialised encoder briefly pre-trained on the clean subset first (SimCLR, or
  the method `warmup_method` names);
and one of ours:
- `teacher`: a copy of the teacher after its --finetune defense (self-distillation: the student starts
  where the purified teacher is and only has to unlearn what stamped views show it; with no --finetune it
  is the same as `raw`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from encoder_clean.encoders.base import Encoder
from encoder_clean.encoders.registry import create_encoder
from encoder_clean.errors import UserError
from encoder_clean.registry import Registry
from encoder_clean.pretrain import DEFAULT_METHOD, PretrainLoopConfig, pretrain_encoder
from encoder_clean.runtime import NULL_PROGRESS, Progress, prepare_model


@dataclass
class StudentInputs:
    poisoned: Encoder  # the encoder given to `distill`, before any --finetune
    arch: str  # the student's architecture (default: the poisoned encoder's)
    clean_images: torch.Tensor  # uint8, on `device`
    device: torch.device
    seed: int
    warmup_epochs: int
    progress: Progress = NULL_PROGRESS
    teacher: Encoder | None = None  # the teacher after --finetune (the `teacher` student copies it)
    warmup_method: str = DEFAULT_METHOD  # the warm-up student's pre-training method


@dataclass(frozen=True)
class Student:
    name: str
    description: str
    build: Callable[[StudentInputs], Encoder]
    copy_of: str | None = None  # "poisoned encoder" or "teacher" for a copy: its architecture is that one's

    def check_arch(self, arch: str, encoder_arch: str) -> None:
        """Refuse a `--student-arch` that a copy cannot have (before any training is spent)."""
        if self.copy_of and arch != encoder_arch:
            raise UserError(f"the {self.name} student is a copy of the {encoder_arch} {self.copy_of}; "
                            f"--student-arch {arch} needs --student void or warmup")


_STUDENTS: Registry[Student] = Registry("student")


def register_student(student: Student) -> Student:
    return _STUDENTS.register(student.name, student)


def get_student(name: str) -> Student:
    return _STUDENTS.get(name)


def list_students() -> dict[str, Student]:
    return _STUDENTS.items()


def _raw(inputs: StudentInputs) -> Encoder:
    RAW.check_arch(inputs.arch, inputs.poisoned.arch)
    return copy.deepcopy(inputs.poisoned).add_head()


def _teacher_copy(inputs: StudentInputs) -> Encoder:
    if inputs.teacher is None:
        raise UserError("the teacher student needs the teacher")
    TEACHER.check_arch(inputs.arch, inputs.teacher.arch)
    return copy.deepcopy(inputs.teacher).requires_grad_(True).add_head().train()


def _void(inputs: StudentInputs) -> Encoder:
    # Seeded so the same seed gives the same student; same input size and normalisation as the teacher.
    torch.manual_seed(inputs.seed)
    if inputs.arch == inputs.poisoned.arch:
        model = inputs.poisoned.reinitialised()
    else:
        model = create_encoder(inputs.arch, image_size=inputs.poisoned.image_size,
                               mean=inputs.poisoned.mean.flatten().tolist(), std=inputs.poisoned.std.flatten().tolist())
    return prepare_model(model.add_head(), inputs.device)


def _warmup(inputs: StudentInputs) -> Encoder:
    if inputs.warmup_epochs < 1:
        raise UserError("warmup_epochs must be at least 1 for the warm-up student")
    model = _void(inputs)
    config = PretrainLoopConfig(epochs=inputs.warmup_epochs, method=inputs.warmup_method)
    pretrain_encoder(model, inputs.clean_images, config, seed=inputs.seed, device=inputs.device,
                     progress=inputs.progress, description="warm-up student")
    return model


RAW = register_student(Student("raw", "a copy of the poisoned encoder", _raw, copy_of="poisoned encoder"))
register_student(Student("void", "a randomly initialised encoder", _void))
TEACHER = register_student(Student("teacher", "a copy of the teacher after --finetune (self-distillation)",
                                   _teacher_copy, copy_of="teacher"))
register_student(Student("warmup", "random init, briefly pre-trained on the clean subset (SimCLR; -o warmup_method=...)", _warmup))
