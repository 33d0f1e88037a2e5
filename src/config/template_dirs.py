"""Where templates are found: the user's directory first, then the shipped ones.

The shipped templates are package data (``structsum.schemas``, the repository's
``schemas/`` folder), found through ``importlib.resources``: a wheel installed
anywhere finds them as an editable checkout does, with no path computed from a
source file. ``STRUCTSUM_TEMPLATES_DIR`` names a directory searched first, so a
team adds templates, or overrides a shipped id, without forking the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from structsum.errors import TemplateNotFound

SHIPPED_PACKAGE = "structsum.schemas"

# One directory, or a search path where the first directory holding an id wins.
TemplateDirs = Path | Sequence[Path]


@lru_cache(maxsize=1)
def shipped_templates_dir() -> Path:
    """The shipped templates' folder; loading stats files, so it must be a real folder."""
    root = resources.files(SHIPPED_PACKAGE)
    if not isinstance(root, Path):  # e.g. imported from a zip archive
        raise TemplateNotFound(
            f"the shipped templates are not a folder on disk ({root})",
            {"package": SHIPPED_PACKAGE},
        )
    return root


def template_search_path(user_dir: Path | None) -> tuple[Path, ...]:
    """``user_dir`` (if any) before the shipped folder, each folder once."""
    shipped = shipped_templates_dir()
    if user_dir is None or user_dir.resolve() == shipped.resolve():
        return (shipped,)
    return (user_dir, shipped)


def as_dirs(dirs: TemplateDirs) -> tuple[Path, ...]:
    return (dirs,) if isinstance(dirs, Path) else tuple(dirs)


def template_ids(dirs: TemplateDirs) -> list[str]:
    """Every template id found on the search path (hidden directories skipped)."""
    ids = {
        p.name
        for directory in as_dirs(dirs)
        if directory.is_dir()
        for p in directory.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_"))
    }
    return sorted(ids)


def find_template_dir(dirs: TemplateDirs, template_id: str) -> Path | None:
    """The first directory on the search path that holds ``template_id``."""
    for directory in as_dirs(dirs):
        if (directory / template_id).is_dir():
            return directory / template_id
    return None
