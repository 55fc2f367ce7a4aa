"""Where the shipped config and pipelines are: inside the installed package, or in a checkout.

A wheel carries ``conf/`` and ``pipelines/`` as ``kkiai_pipeline/conf`` and ``kkiai_pipeline/pipelines``
(see pyproject.toml); a checkout (and an editable install) has them at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The directory ``name`` (``conf`` or ``pipelines``) as installed, else as in the checkout."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kkiai-pipeline is installed without its '{name}' directory")
