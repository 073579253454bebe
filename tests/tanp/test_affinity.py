"""NeighbourAffinity: the three features against a hand computation, and the target path (binary
search) equal to the catalog path (scatter)."""

from __future__ import annotations

import torch

from tanp.affinity import NeighbourAffinity, sorted_neighbours


def affinity_module(
    items: int = 12, neighbours: int = 3, label_max: float = 1.0
) -> NeighbourAffinity:
    module = NeighbourAffinity(
        num_items=items, neighbours=neighbours, label_min=0.0, label_max=label_max
    )
    index = torch.tensor(
        [[(i + 1) % items, (i + 2) % items, (i + 5) % items] for i in range(items)]
    )
    module.set_neighbours(index, torch.tensor([[0.9, 0.5, 0.1]]).expand(items, -1))
    return module


def test_features_are_the_mean_and_max_similarity_to_liked_and_disliked_items() -> None:
    module = affinity_module()
    items, labels = torch.tensor([[0, 4, 7]]), torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.ones_like(items, dtype=torch.bool)
    catalog = module.catalog(items=items, labels=labels, mask=mask)[0]  # (12, 3)
    liked, disliked, closest = torch.zeros(12), torch.zeros(12), torch.zeros(12)
    for item, weights in ((0, liked), (4, liked), (7, disliked)):
        for step, weight in ((1, 0.9), (2, 0.5), (5, 0.1)):
            weights[(item + step) % 12] += weight
            if item != 7:
                closest[(item + step) % 12] = max(closest[(item + step) % 12], weight)
    torch.testing.assert_close(catalog[:, 0], liked / 2)
    torch.testing.assert_close(catalog[:, 1], closest)
    torch.testing.assert_close(catalog[:, 2], disliked / 1)


def test_target_path_equals_the_catalog_path_with_graded_labels_and_padding() -> None:
    torch.manual_seed(0)
    items, neighbours = 40, 7
    module = NeighbourAffinity(num_items=items, neighbours=neighbours, label_min=1.0, label_max=5.0)
    index = torch.stack([torch.randperm(items)[:neighbours] for _ in range(items)])
    weight = torch.rand(items, neighbours) * (torch.rand(items, neighbours) > 0.3)
    module.set_neighbours(index, weight)
    support = torch.randint(0, items, (3, 6))
    labels = torch.randint(1, 6, (3, 6)).float()
    mask = torch.arange(6)[None, :] < torch.tensor([[6], [2], [4]])
    targets = torch.randint(0, items, (3, 9))
    catalog = module.catalog(items=support, labels=labels, mask=mask)
    pairs = module.targets(items=support, labels=labels, mask=mask, targets=targets)
    torch.testing.assert_close(pairs, catalog.gather(1, targets.unsqueeze(-1).expand(-1, -1, 3)))


def test_no_neighbours_or_empty_support_gives_zeros() -> None:
    module = NeighbourAffinity(num_items=5, neighbours=0, label_min=0.0, label_max=1.0)
    empty = torch.zeros(1, 0, dtype=torch.long)
    assert module.catalog(items=empty, labels=empty.float(), mask=empty.bool()).abs().sum() == 0
    assert module.targets(
        items=empty, labels=empty.float(), mask=empty.bool(), targets=torch.tensor([[1, 2]])
    ).shape == (1, 2, 3)


def test_sorted_neighbours_sorts_each_row_by_item_and_keeps_its_weights() -> None:
    index = torch.tensor([[4, 1, 3], [0, 2, 0]])
    weight = torch.tensor([[0.4, 0.1, 0.3], [0.5, 0.2, 0.0]])
    rows, weights = sorted_neighbours(index, weight)
    torch.testing.assert_close(rows, torch.tensor([[1, 3, 4], [0, 0, 2]]))
    torch.testing.assert_close(weights, torch.tensor([[0.1, 0.3, 0.4], [0.5, 0.0, 0.2]]))


def test_similarity_is_each_source_items_stored_weight_for_each_target() -> None:
    module = affinity_module()
    similarity = module.similarity(sources=torch.tensor([0, 4]), targets=torch.tensor([1, 2, 5, 9]))
    expected = torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.0, 0.0, 0.9, 0.1]])
    torch.testing.assert_close(similarity, expected)


def test_strongest_liked_names_liked_support_items_by_contribution_never_disliked_ones() -> None:
    module = affinity_module()
    # item 5: 0.9 from 4 (liked), 0.1 from 0 (liked), 0.5 from 3 (disliked); item 11 from none
    strongest = module.strongest_liked(
        items=torch.tensor([0, 3, 4]),
        labels=torch.tensor([1.0, 0.0, 1.0]),
        targets=torch.tensor([5, 11]),
        limit=2,
    )
    assert strongest == [[4, 0], []]
    one = module.strongest_liked(
        items=torch.tensor([0, 3, 4]),
        labels=torch.tensor([1.0, 0.0, 1.0]),
        targets=torch.tensor([5]),
        limit=1,
    )
    assert one == [[4]]


def test_strongest_liked_weighs_graded_ratings_by_their_liked_share() -> None:
    module = affinity_module(label_max=5.0)
    # target 2: item 0 rated 5 (share 1) x 0.5 against item 1 rated 2 (share 0.4) x 0.9
    strongest = module.strongest_liked(
        items=torch.tensor([0, 1]),
        labels=torch.tensor([5.0, 2.0]),
        targets=torch.tensor([2]),
        limit=2,
    )
    assert strongest == [[0, 1]]
