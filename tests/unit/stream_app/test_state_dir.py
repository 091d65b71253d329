"""Slots of on-disk state: one per live worker process, free again when it dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from salesflow.errors import ConfigError
from stream_app import state_dir


def test_each_claim_gets_its_own_slot_and_a_dead_holder_frees_its_slot(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from stream_app.state_dir import claim
        print(claim(Path({str(tmp_path)!r})).name, flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "slot-0"
        assert state_dir.claim(tmp_path).name == "slot-1"
        assert state_dir.claim(tmp_path).name == "slot-2"
    finally:
        holder.kill()  # as kill -9: the kernel drops its lock
        holder.wait()
    assert state_dir.claim(tmp_path).name == "slot-0"
    assert (tmp_path / "slot-0").is_dir()


def test_no_free_slot_is_one_clear_error(tmp_path):
    state_dir.claim(tmp_path, slots=1)
    with pytest.raises(ConfigError, match="state slots"):
        state_dir.claim(tmp_path, slots=1)


def test_state_of_another_changelog_incarnation_is_dropped(tmp_path):
    slot = tmp_path / "slot-0"
    (slot / "v1" / "tables" / "seen-0.db").mkdir(parents=True)
    state_dir.bind(slot, "topic-a")  # state of unknown origin: not trusted
    assert [p.name for p in slot.iterdir()] == ["changelog-id"]
    (slot / "v1" / "tables" / "seen-0.db").mkdir(parents=True)
    state_dir.bind(slot, "topic-a")  # the same changelog: kept
    assert (slot / "v1" / "tables" / "seen-0.db").is_dir()
    state_dir.bind(slot, "topic-b")  # the topic was deleted and created again
    assert [p.name for p in slot.iterdir()] == ["changelog-id"]
    assert (slot / "changelog-id").read_text().strip() == "topic-b"
