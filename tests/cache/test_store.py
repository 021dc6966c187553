import pytest

from forgeline.cache import CacheStore
from forgeline.errors import ConfigError


def _payload(key, size=100):
    return bytes([key % 251]) * size


def test_accounting_is_exact_and_never_exceeds_capacity():
    store = CacheStore(1_000, "importance", h_fraction=0.9)
    for key in range(50):
        store.set_scores([(key, float(key % 7))])
        store.put(key, _payload(key, 37 + key % 5))
        stats = store.stats()
        stored = sum(len(store._entries[k].data) for k in store._entries)
        assert stats["used_bytes"] == stored <= 1_000
        assert stats["h_bytes"] <= 900 and stats["l_bytes"] <= 100
    assert store.stats()["evictions"] > 0


def test_importance_admits_only_above_the_heap_minimum_and_evicts_the_minimum():
    store = CacheStore(1_000, "importance", h_fraction=0.9)  # H holds 9 × 100 B, L 1 × 100 B
    store.set_scores((k, float(k)) for k in range(20))
    for key in range(9):
        assert store.put(key, _payload(key))
    store.put(100, _payload(100))  # unseen: default score 0 is not above min 0 → L part
    assert store._entries[100].part == "L"
    assert store.put(15, _payload(15))  # outscores the minimum (key 0): 0 is demoted to L
    assert store._entries[15].part == "H"
    assert store._entries[0].part == "L" and 100 not in store  # L is FIFO of one slot
    store.put(16, _payload(16))  # evicts the next minimum, key 1
    h_keys = sorted(k for k in store._entries if store._entries[k].part == "H")
    assert h_keys == [2, 3, 4, 5, 6, 7, 8, 15, 16]
    assert store.get(1) == _payload(1)  # demoted to L: still served until pushed out
    # a score update re-orders the heap: 2 becomes the most important, 3 the next victim
    store.set_scores([(2, 99.0)])
    store.put(17, _payload(17))
    assert 2 in store and store._entries[3].part == "L"


def test_ghost_scores_decide_readmission():
    store = CacheStore(300, "importance", h_fraction=1.0)
    store.set_scores([(1, 5.0), (2, 6.0), (3, 7.0), (4, 1.0)])
    for key in (1, 2, 3):
        store.put(key, _payload(key))
    assert not store.put(4, _payload(4))  # its ghost score (1.0) loses to the minimum (5.0)
    store.set_scores([(4, 10.0)])
    assert store.put(4, _payload(4)) and 1 not in store


def test_pinned_entries_survive_until_read_then_are_evicted_by_importance():
    store = CacheStore(300, "importance", h_fraction=1.0)
    store.set_scores([(1, 1.0), (2, 2.0), (3, 3.0), (4, 9.0), (5, 9.5)])
    for key in (1, 2, 3):
        store.put(key, _payload(key))
    store.pin([1])  # a reader planned key 1 as a hit
    assert store.put(4, _payload(4))
    assert 1 in store and 2 not in store  # the unpinned minimum went instead
    assert store.get(1) == _payload(1)  # the read ends the pin ...
    assert store.put(5, _payload(5)) and 1 not in store  # ... so 1 is the next victim


def test_a_pin_that_is_never_read_expires_after_one_turnover():
    store = CacheStore(200, "importance", h_fraction=1.0)
    store.set_scores([(0, 0.0)] + [(k, float(k)) for k in range(1, 20)])
    store.put(0, _payload(0))
    store.put(1, _payload(1))
    store.pin([0])
    evicted = []
    for key in range(2, 20):
        store.put(key, _payload(key))
        evicted.append(0 not in store)
    assert evicted[0] is False and any(evicted)  # protected at first, not forever


def test_lru_and_never_evict_peers():
    lru = CacheStore(300, "lru")
    for key in (1, 2, 3):
        lru.put(key, _payload(key))
    lru.get(1)
    lru.put(4, _payload(4))
    assert sorted(lru.keys()) == [1, 3, 4]
    keep = CacheStore(300, "never_evict")
    for key in (1, 2, 3, 4):
        keep.put(key, _payload(key))
    assert sorted(keep.keys()) == [1, 2, 3] and keep.stats()["rejected"] == 1


def test_corrupt_entry_is_dropped_and_never_served():
    store = CacheStore(1_000, "lru")
    store.put(7, _payload(7))
    entry = store._entries[7]
    entry.data = b"\x00" + entry.data[1:]  # bit rot in memory
    assert store.get(7) is None
    assert 7 not in store and store.used_bytes == 0
    assert store.stats()["corrupt_dropped"] == 1
    assert store.put(7, _payload(7)) and store.get(7) == _payload(7)  # refetched copy is served


def test_oversized_sample_is_rejected_not_admitted():
    store = CacheStore(50, "importance")
    assert not store.put(1, _payload(1, 100))
    assert store.used_bytes == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"capacity_bytes": 0}, "capacity_bytes=0"),
     ({"capacity_bytes": 10, "policy": "mru"}, "policy='mru'"),
     ({"capacity_bytes": 10, "h_fraction": 0.0}, "h_fraction=0.0")],
)
def test_bad_arguments_name_field_and_value(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CacheStore(**kwargs)


def test_substitutes_come_from_the_l_part_then_low_scoring_h_entries():
    store = CacheStore(1_000, "importance", h_fraction=0.8)  # H: 8 × 100 B, L: 2 × 100 B
    store.set_scores((("a", k), float(k)) for k in range(12))
    for k in range(10):
        store.put(("a", k), _payload(k))
    l_keys = {k for k in store._entries if store._entries[k].part == "L"}
    assert len(l_keys) == 2
    assert set(store.substitutes(2, set(), match="a")) == l_keys
    more = store.substitutes(4, set(), match="a", below=5.0)
    assert len(more) == 4 and l_keys < set(more)
    assert all(store.score(k) < 5.0 for k in more)
    assert store.substitutes(3, set(), match="b") == []
    assert ("a", 9) not in store.substitutes(10, {("a", 9)}, match="a", below=100.0)


def test_substitutes_fill_with_the_least_important_cached_when_low_ones_run_out():
    store = CacheStore(1_000, "importance", h_fraction=0.8)
    store.set_scores((("a", k), float(k)) for k in range(10))
    for k in range(10):
        store.put(("a", k), _payload(k))
    # L = {0, 1}; H scoring below 5: {2, 3, 4}; then the lowest of the rest: 5, 6
    assert set(store.substitutes(7, set(), match="a", below=5.0)) == {("a", k) for k in range(7)}
    assert len(store.substitutes(7, set(), match="a", below=5.0, fill=False)) == 5


def test_keep_unread_evicts_only_samples_already_read_this_epoch():
    store = CacheStore(1_000, "importance", h_fraction=0.9, keep_unread=True)
    keys = [("ns", k) for k in range(20)]
    store.set_scores((k, float(k[1])) for k in keys)
    for key in keys[:9]:  # epoch 0: H fills with 9 samples
        assert store.put(key, _payload(key[1]))
    store.set_epoch("ns", 1)  # none of them read yet in epoch 1: all coming hits
    store.put(keys[15], _payload(15))  # outscores all of them, but evicts none: to L
    assert store._entries[keys[15]].part == "L"
    assert all(store._entries[k].part == "H" for k in keys[:9])
    assert store.get(keys[3]) is not None  # read in epoch 1: may go now
    store.put(keys[16], _payload(16))
    assert keys[3] not in store._entries or store._entries[keys[3]].part == "L"
    assert store._entries[keys[16]].part == "H"
    assert all(store._entries[k].part == "H" for k in keys[:9] if k != keys[3])
    assert store.check_accounting()


def test_a_sample_pinned_by_two_readers_stays_until_both_read_it():
    store = CacheStore(300, "lru")  # room for 3 x 100 B
    for key in range(3):
        store.put(key, _payload(key))
    store.pin([0])
    store.pin([0])  # a second rank planned it too
    assert store.get(0) is not None  # the first reader
    store.put(3, _payload(3))  # evicts the oldest unpinned entry, not 0
    assert 0 in store and 1 not in store
    assert store._pinned(store._entries[0])
    assert store.get(0) is not None  # the second reader; now it may go
    assert not store._pinned(store._entries[0]) and store.check_accounting()
