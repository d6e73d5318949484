"""The state file other commands find a control plane by, and removing only what `up` made."""

from pathlib import Path

import pytest

from servectl.cluster.processes import Recorded
from servectl.cluster.state import OWNED, Layout, State, StateError, read_state, remove_state, write_state


def test_the_state_round_trips_and_no_state_is_none(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert read_state(layout) is None
    etcd = Recorded("etcd", 1, 2, tmp_path / "e.log")
    state = State("https://127.0.0.1:1", tmp_path / "kubeconfig", (etcd,))
    write_state(layout, state)
    assert read_state(layout) == state
    assert not list(tmp_path.glob("*.tmp")), "the temporary file is renamed over the state file"


@pytest.mark.parametrize("text", ["{", '{"url": "x"}', '{"url": "x", "kubeconfig": "k", "processes": [{}]}'])
def test_an_unreadable_state_names_the_file(tmp_path: Path, text: str) -> None:
    layout = Layout(tmp_path)
    layout.state_file.write_text(text)
    with pytest.raises(StateError, match=str(layout.state_file)):
        read_state(layout)


def test_remove_state_takes_only_what_up_made(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "cluster")
    for name in ("pki", "etcd", "logs"):
        (layout.root / name).mkdir(parents=True)
    assert set(OWNED) == {"pki", "etcd", "logs", "cluster.json", "kubeconfig"}, OWNED
    layout.state_file.write_text("{}")
    layout.kubeconfig.write_text("")
    (layout.root / "notes.txt").write_text("mine")
    remove_state(layout, keep=("logs",))
    assert sorted(p.name for p in layout.root.iterdir()) == ["logs", "notes.txt"]
    (layout.root / "notes.txt").unlink()
    remove_state(layout)
    assert not layout.root.exists(), "an empty directory is removed too"
