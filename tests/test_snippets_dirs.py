"""Shipped snippets merged with the site's /etc/cas/snippets.d (as the packages install them)."""

import os

import pytest

from caslib import config
from caslib.crashrun import snippets
from caslib.records import StepError


def test_site_directory_adds_replaces_and_masks(tmp_path):
    shipped, site = tmp_path / "share", tmp_path / "site"
    shipped.mkdir()
    site.mkdir()
    (shipped / "10-traceback").write_text("bt > traceback\n")
    (shipped / "20-sys").write_text("sys > sys\n")
    (shipped / "30-log").write_text("log > log\n")
    (site / "20-sys").write_text("sys -c > sys\n")        # replaces the shipped one
    (site / "30-log").write_text("")                       # masks it
    (site / "25-files").write_text("files > files\n")      # added, in name order
    (site / "25-files.rpmnew").write_text("ps > ps\n")     # package leftovers skipped
    plan = snippets.build([str(shipped), str(site)], {}, str(tmp_path))
    assert plan.commands == ["bt > traceback", "sys -c > sys", "files > files", "exit"]
    assert plan.targets == ["traceback", "sys", "files"]


def test_empty_site_directory_is_fine(tmp_path):
    (tmp_path / "site").mkdir()
    plan = snippets.build([snippets.PACKAGE_SNIPPETS, str(tmp_path / "site")], {}, str(tmp_path))
    shipped = [n for n in os.listdir(snippets.PACKAGE_SNIPPETS) if n[:1].isdigit()]
    assert plan.commands[-1] == "exit" and len(plan.sources) == len(shipped)


def test_nothing_left_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "10-x").write_text("bt\n")
    (tmp_path / "b" / "10-x").write_text("")
    with pytest.raises(StepError, match="hold no snippet files"):
        snippets.snippet_files([str(tmp_path / "a"), str(tmp_path / "b")])


def test_directories_in_force(tmp_path):
    site = tmp_path / "site"
    defaults = config.defaults()
    assert snippets.default_directories(defaults, str(site))[1:] == []
    site.mkdir()
    assert snippets.default_directories(defaults, str(site))[-1] == str(site)
    conf = tmp_path / "c.conf"
    conf.write_text(f"[settings]\nsnippets = {tmp_path}\n")
    assert snippets.default_directories(config.load(str(conf), environ={}), str(site)) == [
        str(tmp_path)]
    assert os.path.isdir(snippets.default_directory(defaults))
