"""TaNP module: shapes in every mode, masking, the embedding shortcut, memory unit."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn import functional as F

from tanp.config import TaNPConfig
from tanp.model import IdEmbedding, MemoryUnit, TaNP, TaNPOutput, TaskState


def _batch(num_items: int = 30, batch: int = 3, width: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    items = torch.randint(0, num_items, (batch, width), generator=generator)
    labels = torch.randint(0, 2, (batch, width), generator=generator).float()
    return {"items": items, "labels": labels}


@pytest.mark.parametrize("decoder", ["film", "gating_film", "none"])
@pytest.mark.parametrize("user_input", ["none", "unknown"])
@pytest.mark.parametrize("aggregator", ["mean", "attention"])
def test_forward_returns_one_type_in_train_and_eval(
    decoder: str, user_input: str, aggregator: str
) -> None:
    config = TaNPConfig(
        num_items=30, num_users=5, user_input=user_input, decoder=decoder, aggregator=aggregator
    )  # type: ignore[arg-type]
    model = TaNP(config)
    data = _batch()
    mask = torch.ones_like(data["labels"], dtype=torch.bool)
    trained = model.train()(
        context_items=data["items"],
        context_labels=data["labels"],
        context_mask=mask,
        target_items=data["items"],
        target_labels=data["labels"],
        target_mask=mask,
        sample=True,
    )
    evaluated = model.eval()(
        context_items=data["items"],
        context_labels=data["labels"],
        context_mask=mask,
        target_items=data["items"],
    )
    for output in (trained, evaluated):
        assert isinstance(output, TaNPOutput)
        assert output.prediction.shape == (3, 8)
        assert output.assignment.shape == (3, config.clusters_k)
    assert trained.posterior is not None and evaluated.posterior is None


def test_padding_does_not_change_scores() -> None:
    model = TaNP(TaNPConfig(num_items=30)).eval()
    data = _batch(width=6)
    padded_items = torch.cat([data["items"], torch.zeros(3, 4, dtype=torch.long)], dim=1)
    padded_labels = torch.cat([data["labels"], torch.ones(3, 4)], dim=1)
    mask = torch.arange(10)[None, :].expand(3, -1) < 6
    plain = model(
        context_items=data["items"],
        context_labels=data["labels"],
        context_mask=torch.ones(3, 6, dtype=torch.bool),
        target_items=data["items"],
    )
    padded = model(
        context_items=padded_items,
        context_labels=padded_labels,
        context_mask=mask,
        target_items=data["items"],
    )
    torch.testing.assert_close(plain.prediction, padded.prediction)


def test_eval_is_deterministic_and_sampling_is_not() -> None:
    model = TaNP(TaNPConfig(num_items=30)).eval()
    data = _batch()
    mask = torch.ones_like(data["labels"], dtype=torch.bool)
    kwargs = {
        "context_items": data["items"],
        "context_labels": data["labels"],
        "context_mask": mask,
        "target_items": data["items"],
    }
    assert torch.equal(model(**kwargs).prediction, model(**kwargs).prediction)
    assert not torch.equal(model(**kwargs, sample=True).prediction, model(**kwargs).prediction)


def test_embedding_lookup_equals_one_hot_linear() -> None:
    embedding = IdEmbedding(12, first_dim=5, second_dim=4)
    ids = torch.tensor([0, 7, 11])
    one_hot = F.one_hot(ids, 12).float()
    first = F.relu(one_hot @ embedding.first.weight)
    expected = F.relu(embedding.second(first))
    torch.testing.assert_close(embedding(ids), expected)


def test_memory_unit_assignment_is_a_distribution_over_clusters() -> None:
    memory = MemoryUnit(clusters=4, dim=6, temperature=1.0)
    task = torch.randn(5, 6)
    assignment, modulated = memory(task)
    torch.testing.assert_close(assignment.sum(1), torch.ones(5))
    torch.testing.assert_close(modulated, task + assignment @ memory.centres)
    # the closest centre gets the largest weight
    centre_task = memory.centres.detach()[2:3]
    assert memory(centre_task)[0].argmax().item() == 2


def test_model_without_item_ids_describes_items_by_their_features() -> None:
    config = TaNPConfig(
        num_items=30, item_id_input=False, item_feature_dim=5, neighbours=4, taste_head=True
    )
    model = TaNP(config).eval()
    assert model.item_embedding is None
    assert not any(name.startswith("item_embedding") for name in model.state_dict())
    model.item_features.copy_(torch.randn(30, 5))
    data = _batch()
    mask = torch.ones_like(data["labels"], dtype=torch.bool)
    output = model(
        context_items=data["items"],
        context_labels=data["labels"],
        context_mask=mask,
        target_items=data["items"],
    )
    assert output.prediction.shape == (3, 8)
    assert torch.isfinite(output.prediction).all()
    with pytest.raises(ValueError, match="needs an input"):
        TaNPConfig(num_items=30, item_id_input=False)


def test_affinity_dropout_hides_the_affinity_from_whole_training_episodes() -> None:
    torch.manual_seed(0)
    config = TaNPConfig(num_items=30, neighbours=4, affinity_dropout=0.5, film_gamma_offset=1.0)
    model = TaNP(config)
    model.affinity.set_neighbours(
        torch.stack([torch.randperm(30)[:4] for _ in range(30)]), torch.rand(30, 4)
    )
    data = _batch(batch=64)
    mask = torch.ones_like(data["labels"], dtype=torch.bool)
    inputs = {
        "context_items": data["items"],
        "context_labels": data["labels"],
        "context_mask": mask,
        "target_items": data["items"],
    }
    evaluated = model.eval()(**inputs).prediction
    torch.testing.assert_close(model.eval()(**inputs).prediction, evaluated)
    torch.manual_seed(1)
    trained = model.train()(**inputs).prediction
    same = torch.isclose(trained, evaluated).all(dim=1)
    assert 0 < int(same.sum()) < 64  # about half the episodes keep their affinity


def test_task_state_rows_are_the_rows_of_every_part() -> None:
    model = TaNP(TaNPConfig(num_items=30)).eval()
    data = _batch(batch=4)
    mask = torch.ones_like(data["labels"], dtype=torch.bool)
    x = model.point_inputs(data["items"])
    state = model.encode(x=x, labels=data["labels"], mask=mask, items=data["items"])
    part = state.rows(slice(1, 3))
    assert isinstance(part, TaskState)
    torch.testing.assert_close(part.prior.mu, state.prior.mu[1:3])
    torch.testing.assert_close(part.prior.logvar, state.prior.logvar[1:3])
    for name in ("task", "assignment", "support_items", "support_labels", "support_mask"):
        assert torch.equal(getattr(part, name), getattr(state, name)[1:3]), name


def test_bayesian_latent_narrows_as_points_are_added() -> None:
    """With latent_aggregation="bayesian" q(z)'s variance never grows when a point is added
    (precisions add up), whatever the weights; the padding changes nothing."""
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=30, latent_aggregation="bayesian")).eval()
    items = torch.randperm(30)[:12].unsqueeze(0)
    labels = (torch.rand(1, 12) > 0.5).float()
    variances = []
    with torch.no_grad():
        for n in range(0, 13):
            x = model.point_inputs(items[:, :n])
            mask = torch.ones(1, n, dtype=torch.bool)
            variances.append(model.latent(x, labels[:, :n], mask).logvar.exp())
        padded = model.latent(
            model.point_inputs(items),
            labels,
            torch.arange(12).unsqueeze(0) < 5,
        )
    for before, after in itertools.pairwise(variances):
        assert bool((after <= before + 1e-7).all())
    torch.testing.assert_close(variances[0], torch.ones_like(variances[0]))  # the prior
    torch.testing.assert_close(padded.logvar.exp(), variances[5])
