"""Distillation: students, losses and the trainer."""
