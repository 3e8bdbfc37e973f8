"""Trainers of recbole_mm models, found by name as ``<Model>Trainer``."""
