"""The retrieval library: models, index, catalog and search. Knows nothing of Flask or click.

The model factory is imported on first use (PEP 562), not with the package: importing torch and
open_clip takes seconds, and commands such as ``vtr --help`` or ``vtr status`` never need them.
"""

from retrieval.errors import VTRError

__all__ = ["VTRError", "create_model", "create_model_and_transforms", "get_model_config", "list_models"]
_FACTORY = ("create_model", "create_model_and_transforms", "get_model_config", "list_models")


def __getattr__(name: str):
    if name in _FACTORY:
        from retrieval import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
