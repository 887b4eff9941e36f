import numpy as np
import pytest

from t2diff.data import Catalog, dataset_stats, load_kuairand, load_ml1m, user_sequences


def test_catalog_round_trip_and_growth():
    cat = Catalog("t", np.array([10, 20, 30]), np.array([[0, 0], [1, 2], [3, 0], [0, 0]]), num_tags=3)
    assert cat.index(20) == 2 and 40 not in cat
    assert cat.indices([30, 10]).tolist() == [3, 1]
    with pytest.raises(KeyError):
        cat.indices([99])
    assert cat.indices([99], unknown=0).tolist() == [0]
    assert cat.raw([0, 1, 3]).tolist() == [-1, 10, 30]
    assert cat.add(40, [3, 1, 2, 7]) == 4  # extra and out-of-range tags are dropped
    assert cat.tags[4].tolist() == [3, 1]
    assert cat.add(40) == 4  # idempotent
    assert cat.indices([40, 30, 99], unknown=0).tolist() == [4, 3, 0]  # the lookup table follows add()
    again = Catalog.from_dict(cat.to_dict())
    assert again.index(40) == 4 and np.array_equal(again.tags, cat.tags)


def test_user_sequences_keep_row_order():
    from t2diff.data import Interactions

    cat = Catalog("t", np.array([5, 6, 7]), np.zeros((4, 1)), num_tags=1)
    inter = Interactions("t", np.array([2, 1, 2, 1]), np.array([7, 5, 5, 6]), np.array([1, 2, 3, 4]))
    seqs = user_sequences(inter, cat)
    assert seqs[1][0].tolist() == [1, 2] and seqs[2][0].tolist() == [3, 1]
    assert seqs[2][1].tolist() == [1, 3]


@pytest.mark.integration
def test_real_data_matches_provenance():
    inter, cat = load_ml1m("ge4")
    s = dataset_stats(inter, cat)
    # PROVENANCE.md: 575,281 ratings >= 4 over 6,038 users and 3,533 movies; users with < 5 positives dropped.
    assert cat.num_items == 3533 and s["interactions"] <= 575_281 and s["users"] <= 6038
    assert np.all(np.diff(inter.ts_ms[inter.user == 1]) >= 0)  # chronological within a user
    assert cat.tags[cat.index(1)].tolist()[:3] == [3, 4, 5]  # Toy Story: Animation, Children's, Comedy
    k_inter, k_cat = load_kuairand()
    assert (len(k_inter), len(np.unique(k_inter.user)), k_cat.num_items) == (56_340, 6_441, 3_991)


def test_catalog_indices_equal_per_id_lookups():
    rng = np.random.default_rng(0)
    raw = rng.choice(10**9, 500, replace=False)  # unsorted, sparse raw ids
    cat = Catalog("t", raw, np.zeros((501, 1), dtype=np.int64), num_tags=0)
    q = np.concatenate([rng.choice(raw, 300), rng.integers(0, 10**9, 50), [raw.min() - 1, raw.max() + 1]])
    got = cat.indices(q, unknown=0)
    assert got.tolist() == [cat._index.get(int(r), 0) for r in q]
    assert cat.indices([]).tolist() == []
    empty = Catalog("e", np.array([], dtype=np.int64), np.zeros((1, 1), dtype=np.int64), num_tags=0)
    assert empty.indices([5], unknown=0).tolist() == [0]
    with pytest.raises(KeyError, match="unknown item id 5"):
        empty.indices([5])
