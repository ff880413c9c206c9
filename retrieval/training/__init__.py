"""Training the dual encoder and its matching head (VTC + VTM), resumable and deterministic."""

from retrieval.training.config import TrainCfg
from retrieval.training.trainer import train

__all__ = ["TrainCfg", "train"]
