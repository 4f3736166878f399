"""What one process counts to itself (alloconv_gate.store.local): fixed windows as the
store's, and a bounded size, so that a flood from many addresses cannot fill memory."""

from alloconv_gate.store.local import LocalCounts


def test_counts_in_fixed_windows_as_the_store_does():
    counts = LocalCounts()
    assert counts.get("k", 60, 120.0) == 0
    assert [counts.add("k", 60, now) for now in (120.0, 150.0, 179.9)] == [1, 2, 3]
    assert counts.get("k", 60, 179.9) == 3
    assert counts.get("k", 60, 180.0) == 0  # the next window
    assert counts.get("k", 3600, 150.0) == 0  # another length
    assert counts.add("k", 60, 180.0) == 1
    assert counts.get("other", 60, 180.0) == 0


def test_a_clock_moved_back_does_not_see_a_later_window():
    counts = LocalCounts()
    counts.add("k", 60, 200.0)
    assert counts.get("k", 60, 150.0) == 0


def test_when_full_the_ended_windows_go_first():
    counts = LocalCounts(size=3)
    counts.add("old", 60, 0.0)
    counts.add("live-1", 60, 100.0)
    counts.add("live-2", 60, 110.0)
    assert counts.add("new", 60, 119.0) == 1
    assert len(counts) == 3
    assert counts.get("old", 60, 30.0) == 0
    assert counts.get("live-1", 60, 119.0) == 1


def test_when_full_of_live_windows_everything_goes_and_it_never_grows_past_its_size():
    """Forgetting only costs the store a read or a write again: never a wrong answer."""
    counts = LocalCounts(size=100)
    for n in range(1000):
        counts.add(f"2001:db8:{n:x}::/64", 60, 120.0)
        assert len(counts) <= 100
    assert counts.add("2001:db8:3e7::/64", 60, 121.0) == 2  # the last one is kept
