"""The command line as a user runs it: real processes, JSON that validates, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydantic import TypeAdapter

from scenerec.models import Recommendation, SceneInfo

from .conftest import write_catalog


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scenerec", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=600,
    )


def test_recommend_json_validates_and_respects_the_rules(tiny_settings):
    out = run("recommend", "--user", "carol", "--scene", "films", "-k", "5", "--json",
              data_dir=tiny_settings.data_dir)
    assert out.returncode == 0, out.stderr
    recs = TypeAdapter(list[Recommendation]).validate_json(out.stdout)
    ids = [r.item_id for r in recs]
    assert len(ids) == 5 == len(set(ids))
    assert all(r.scene == "films" for r in recs) and "f3" not in ids
    assert all(e.scene in {"books", "films"} for r in recs for e in r.evidence)


def test_text_output_names_the_evidence(tiny_settings):
    out = run("recommend", "--user", "bob", "--scene", "films", "-k", "2", data_dir=tiny_settings.data_dir)
    assert out.returncode == 0, out.stderr
    assert "because you liked" in out.stdout and "(books," in out.stdout


def test_scenes_lists_counts(tiny_settings):
    out = run("scenes", "--json", data_dir=tiny_settings.data_dir)
    scenes = TypeAdapter(list[SceneInfo]).validate_json(out.stdout)
    assert {(s.scene, s.items) for s in scenes} == {("books", 8), ("films", 10)}


def test_errors_are_one_line_without_traceback(tiny_settings, tmp_path):
    unknown = run("recommend", "--user", "zed", "--scene", "films", data_dir=tiny_settings.data_dir)
    assert unknown.returncode == 1
    assert "unknown user 'zed'" in unknown.stderr and "Traceback" not in unknown.stderr

    bad = write_catalog(tmp_path / "bad")
    (bad / "items.jsonl").write_text('{"item_id": "x", "scene": "books", "title": "   ", "text": ""}\n')
    failed = run("ingest", str(bad), data_dir=tiny_settings.data_dir)
    assert failed.returncode == 2
    assert "items.jsonl, line 1, field 'title'" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_demo_shows_explained_cross_scene_picks_for_a_thin_scene(demo_settings, tmp_path):
    """What `make demo` prints without a terminal: a demo user, their thin scene, evidence from elsewhere."""
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(demo_settings.data_dir, data_dir)  # ingested once per session; demo reuses it
    out = run("demo", "--json", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    recs = TypeAdapter(list[Recommendation]).validate_python(shown["recommendations"])
    assert len(recs) == 5 and all(r.scene == shown["scene"] for r in recs)
    assert any(e.scene != shown["scene"] for r in recs for e in r.evidence), "no cross-scene evidence"
