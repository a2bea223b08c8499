"""Workspace admission (context/workspaces.py): what may reach a model; files created after
indexing, ignored files."""

from __future__ import annotations

from pathlib import Path

import pytest
from _support import commit_all, init_repo, write

from context.workspaces import AdmissionRefused, Workspaces


def test_a_file_created_after_indexing_is_admitted_unless_ignored(tmp_path: Path) -> None:
    repo = init_repo(tmp_path)
    write(tmp_path, ".gitignore", "build/\n")
    write(tmp_path, "app.py")
    commit_all(repo)
    workspaces = Workspaces()
    workspaces.get(tmp_path)  # indexed before the new files exist
    new = write(tmp_path, "new_module.py")
    ignored = write(tmp_path, "build/generated.py")
    assert workspaces.admit(new, "x = 1\n", workspace=tmp_path).relative == "new_module.py"
    with pytest.raises(AdmissionRefused, match=r"excluded by \.gitignore"):
        workspaces.admit(ignored, "x = 1\n", workspace=tmp_path)
