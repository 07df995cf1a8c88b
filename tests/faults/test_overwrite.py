"""--overwrite removes only a recognisable sds3d run folder's own entries; anything else exits 2, untouched."""

from __future__ import annotations

import json
import shutil

import pytest
from _support import TOY, bytes_lost, fast, snapshot

from sds3d.cli import main

pytestmark = pytest.mark.faults


def _plant(folder, kind):
    if kind == "thesis":
        (folder / "thesis.txt").write_text("precious")
    elif kind == "a folder named mesh":
        (folder / "mesh").mkdir()
        (folder / "mesh" / "sculpture.obj").write_text("v 0 0 0\n")
    elif kind == "a foreign summary.json":
        (folder / "summary.json").write_text(json.dumps({"revenue": 1}))
    elif kind == "renders only":
        (folder / "renders").mkdir()
        (folder / "renders" / "holiday.png").write_bytes(b"\x89PNG")


@pytest.mark.parametrize("kind", ["thesis", "a folder named mesh", "a foreign summary.json", "renders only"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "--overwrite"])
def test_a_folder_that_is_not_a_run_is_left_alone(tmp_path, tiny_pixel_prior, capsys, kind, overwrite, record_property):
    folder = tmp_path / "important"
    folder.mkdir()
    _plant(folder, kind)
    before = snapshot(folder)
    code = main(["run", TOY, "prompt=a red cube", "name=important", *fast(tmp_path, tiny_pixel_prior), *(["--overwrite"] if overwrite else [])])
    lost = bytes_lost(before, folder)
    record_property("bytes_lost", lost)
    assert code == 2 and "is not an sds3d run folder" in capsys.readouterr().err
    assert lost == 0 and snapshot(folder) == before  # nothing removed, nothing added (not even a lock file)


def test_overwrite_of_a_run_keeps_foreign_files_and_symlink_targets(tmp_path, tiny_pixel_prior, reference, record_property):
    run_dir = shutil.copytree(reference, tmp_path / "run")
    (run_dir / "notes.txt").write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    shutil.rmtree(run_dir / "renders", ignore_errors=True)
    (run_dir / "renders").symlink_to(elsewhere)  # a run's entry that points out of it
    before = snapshot(elsewhere)
    assert main(["run", TOY, "prompt=a red cube", "name=run", *fast(tmp_path, tiny_pixel_prior), "--overwrite"]) == 0
    lost = bytes_lost(before, elsewhere)
    record_property("bytes_lost", lost)
    assert lost == 0 and (run_dir / "notes.txt").read_text() == "mine" and (run_dir / ".complete").is_file()
