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

    def test_it_warns_that_it_is_for_one_process(self):
        """The gate logs this at start-up so nobody runs workers on a store they don't share."""
        store = open_store("memory")
        assert isinstance(store, MemoryStore)
        assert "this process only" in store.warning
