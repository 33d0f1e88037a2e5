import shutil
from pathlib import Path

import pytest

from structsum.config import Settings
from structsum.config.template_dirs import shipped_templates_dir, template_search_path
from structsum.errors import TemplateNotFound
from structsum.processors.templates import list_templates, load_template


def test_shipped_templates_come_from_the_package_by_default() -> None:
    settings = Settings()
    assert settings.template_dirs == (shipped_templates_dir(),)
    assert (shipped_templates_dir() / "generic_summary_v1" / "schema.json").is_file()


def test_a_user_directory_adds_templates_and_overrides_shipped_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = shipped_templates_dir()
    shutil.copytree(shipped / "generic_summary_v1", tmp_path / "team_notes_v1")
    shutil.copytree(shipped / "generic_summary_v1", tmp_path / "meeting_minutes_v1")
    monkeypatch.setenv("STRUCTSUM_TEMPLATES_DIR", str(tmp_path))
    dirs = Settings().template_dirs
    assert dirs == (tmp_path, shipped)
    ids = list_templates(dirs)
    assert "team_notes_v1" in ids and "generic_summary_v1" in ids
    assert ids.count("meeting_minutes_v1") == 1
    assert load_template(dirs, "meeting_minutes_v1").path == tmp_path / "meeting_minutes_v1"
    assert load_template(dirs, "document_brief_v1").path == shipped / "document_brief_v1"


def test_an_id_on_no_directory_names_every_directory_searched(tmp_path: Path) -> None:
    dirs = template_search_path(tmp_path)
    with pytest.raises(TemplateNotFound) as caught:
        load_template(dirs, "nope_v1")
    assert str(tmp_path) in caught.value.message
    assert str(shipped_templates_dir()) in caught.value.message


def test_the_shipped_directory_as_user_directory_is_searched_once() -> None:
    assert template_search_path(shipped_templates_dir()) == (shipped_templates_dir(),)
