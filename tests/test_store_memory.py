"""The memory engine against the store contract."""

import pytest
from store_contract import StoreContract

from alloconv_gate.store import open_store
from alloconv_gate.store.memory import MemoryStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        store = MemoryStore()
        yield store
        store.close()

    @pytest.mark.xfail(
        strict=True,
        reason="MemoryStore.hit deletes every window that started before the current one, "
        "whatever its length; harmless while one memory store serves one gate",
    )
    def test_a_short_window_ending_does_not_reset_a_longer_one(self, store):
        super().test_a_short_window_ending_does_not_reset_a_longer_one(store)

    @pytest.mark.xfail(
        strict=True,
        reason="MemoryStore keys counters by key and window start, not window length",
    )
    def test_one_key_with_windows_of_different_lengths_counts_apart(self, store):
        super().test_one_key_with_windows_of_different_lengths_counts_apart(store)

    def test_it_warns_that_it_is_for_one_process(self):
        """The gate logs this at start-up so nobody runs workers on a store they don't share."""
        store = open_store("memory")
        assert isinstance(store, MemoryStore)
        assert "this process only" in store.warning
