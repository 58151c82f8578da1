"""Per-run scratch folders do not pile up: the newest ones stay, the rest go."""

import os

from railyard.fsutil import prune_oldest


def test_all_but_the_newest_folders_are_removed(tmp_path):
    for age, name in enumerate(["run-c", "run-b", "run-a", "run-d"]):
        folder = tmp_path / name
        (folder / "features").mkdir(parents=True)
        os.utime(folder, (1_000_000 - age * 100, 1_000_000 - age * 100))  # run-c newest, run-d oldest
    (tmp_path / "stray.txt").write_text("a file is never removed")

    removed = prune_oldest(tmp_path, keep=2)

    assert sorted(path.name for path in removed) == ["run-a", "run-d"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run-b", "run-c", "stray.txt"]
    assert prune_oldest(tmp_path, keep=2) == []
    assert prune_oldest(tmp_path / "missing", keep=1) == []
