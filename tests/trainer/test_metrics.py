import math

import pytest
import torch

from trainer.metrics import RankingAccumulator, metrics_from_ranks, ranks_from_scores


def test_ranks_hand_worked_with_ties_and_padding():
    # column 0 is padding and must never count, even when it scores highest
    scores = torch.tensor([
        [9.0, 0.5, 0.9, 0.1, 0.5],  # target 1 (0.5): only item 2 (0.9) is strictly higher; tie with item 4 -> rank 2
        [0.0, 0.3, 0.3, 0.3, 0.3],  # all tied: ties go to the target -> rank 1
        [0.0, 0.1, 0.2, 0.3, 0.4],  # target 1 is the lowest of 4 -> rank 4
    ])
    target = torch.tensor([1, 3, 1])
    assert ranks_from_scores(scores, target).tolist() == [2, 1, 4]


def test_exclusions_drop_seen_items_but_never_the_target():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.8, 0.1]])
    target = torch.tensor([1])
    assert ranks_from_scores(scores, target).tolist() == [3]
    rows, cols = torch.tensor([0, 0]), torch.tensor([2, 1])  # item 2 seen; item 1 (the target) "seen" too
    assert ranks_from_scores(scores, target, rows, cols).tolist() == [2]


def test_recall_mrr_ndcg_hand_worked():
    ranks = [1, 2, 3, 25]
    m = metrics_from_ranks(ranks, ks=(2, 20), ndcg=True)
    assert m["recall@2"] == pytest.approx(2 / 4)
    assert m["recall@20"] == pytest.approx(3 / 4)
    assert m["mrr@2"] == pytest.approx((1 + 1 / 2) / 4)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert m["n"] == 4


def test_accumulator_batches_equal_one_pass_and_rejects_empty():
    acc = RankingAccumulator((2, 20))
    acc.add(torch.tensor([1, 2]))
    acc.add(torch.tensor([3, 25]))
    assert acc.result() == metrics_from_ranks([1, 2, 3, 25], (2, 20))
    with pytest.raises(ValueError):
        RankingAccumulator((2,)).result()
