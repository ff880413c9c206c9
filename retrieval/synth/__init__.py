"""Procedural video-text benchmark whose captions need the time axis (see README, "Synthetic data")."""

from retrieval.synth.generate import CAPTIONS, generate, read_captions

__all__ = ["CAPTIONS", "generate", "read_captions"]
