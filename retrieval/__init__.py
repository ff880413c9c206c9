"""The retrieval library: models, index, catalog and search. Knows nothing of Flask or click."""

from retrieval.errors import VTRError
from retrieval.factory import create_model, create_model_and_transforms, get_model_config, list_models

__all__ = ["VTRError", "create_model", "create_model_and_transforms", "get_model_config", "list_models"]
