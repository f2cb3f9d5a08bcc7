"""Dependency checks of the inspection views (the error classes live in :mod:`cnnlab.errors`)."""

from __future__ import annotations

from cnnlab.errors import MissingDependencyError, UnsupportedModelError

__all__ = ["MissingDependencyError", "UnsupportedModelError", "require_captum"]


def require_captum() -> None:
    """Raise :class:`MissingDependencyError` with the install command if Captum is missing."""
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "This view uses Captum (PyTorch's attribution library), which is not installed. Install it with "
            "`pip install 'captum>=0.8'`."
        ) from None
