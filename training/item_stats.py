"""Item statistics from a set of users' positives, the one place baselines and the trainer get them:
popularity, shrunk-cosine neighbour lists, item and content factors; the tables of all train users
and of each fold, and the tensors a model's item buffers point to. Sparse throughout (scipy), so
any catalog size works.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse
import torch
from scipy.sparse.linalg import svds

from tanp.affinity import sorted_neighbours
from tanp.model import TaNP
from training.episodes import Prepared


def positive_matrix(prepared: Prepared, users: np.ndarray | None = None) -> sparse.csr_matrix:
    """(len(users), items) 0/1 CSR matrix of the users' positives; users default to the train
    split. Row r is users[r]."""
    interactions = prepared.interactions
    if users is None:
        users = prepared.users_of("train")
    position = np.full(len(interactions.user_ids), -1, dtype=np.int64)
    position[users] = np.arange(users.size)
    rows = np.flatnonzero(
        (position[interactions.users] >= 0)
        & (interactions.labels >= interactions.positive_threshold)
    )
    values = np.ones(rows.size, dtype=np.float32)
    matrix = sparse.csr_matrix(
        (values, (position[interactions.users[rows]], interactions.items[rows])),
        shape=(users.size, len(interactions.item_ids)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def item_counts(matrix: sparse.csr_matrix) -> np.ndarray:
    """(items,) positives per item."""
    return np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)


def co_occurrence(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """(items, items) CSR: number of users with both items positive; zero diagonal."""
    items_by_users = matrix.T.tocsr()
    counts = (items_by_users @ matrix).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    return counts.astype(np.float32)


def shrunk_cosine(co: sparse.csr_matrix, counts: np.ndarray, *, shrink: float) -> sparse.csr_matrix:
    """sim(i, j) = co(i, j) / (sqrt(n_i n_j) + shrink), on co's non-zeros (shrink 0 = cosine)."""
    coo = co.tocoo()
    scale = np.sqrt(counts[coo.row].astype(np.float64) * counts[coo.col]) + shrink
    values = (coo.data / np.maximum(scale, 1e-12)).astype(np.float32)
    return sparse.csr_matrix((values, (coo.row, coo.col)), shape=co.shape)


BLOCK_ITEMS = 4096  # co-occurrence rows computed at once: memory bounded by the block


def neighbour_lists(
    matrix: sparse.csr_matrix, counts: np.ndarray, *, count: int, shrink: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's `count` best shrunk-cosine neighbours (see top_neighbours), from users x
    items positives, co-occurrence computed for BLOCK_ITEMS items at a time."""
    items = matrix.shape[1]
    index = np.zeros((items, max(count, 0)), dtype=np.int64)
    weight = np.zeros((items, max(count, 0)), dtype=np.float32)
    by_item = matrix.T.tocsr()
    for start in range(0, items, BLOCK_ITEMS):
        stop = min(start + BLOCK_ITEMS, items)
        rows = (by_item[start:stop] @ matrix).tocoo()
        keep = rows.row + start != rows.col
        block = sparse.csr_matrix(
            (rows.data[keep].astype(np.float32), (rows.row[keep], rows.col[keep])),
            shape=(stop - start, items),
        )
        scale = np.sqrt(counts[block.tocoo().row + start].astype(np.float64))
        coo = block.tocoo()
        values = coo.data / (scale * np.sqrt(counts[coo.col].astype(np.float64)) + shrink)
        similarity = sparse.csr_matrix((values, (coo.row, coo.col)), shape=block.shape)
        block_index, block_weight = top_neighbours(similarity, count=count)
        # top_neighbours pads with the row number of the block: make it the item itself
        padding = block_weight == 0
        block_index[padding] = np.broadcast_to(np.arange(start, stop)[:, None], block_index.shape)[
            padding
        ]
        index[start:stop], weight[start:stop] = block_index, block_weight
    return index, weight


def top_neighbours(similarity: sparse.csr_matrix, *, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's `count` most similar items as (items, count) index and weight arrays; rows
    with fewer non-zero neighbours are padded with weight 0 (index = the item itself). Ties break
    by the lower index. Works on the sparse rows: O(nnz log nnz), no dense row."""
    items = similarity.shape[0]
    count = max(0, min(count, items))
    index = np.repeat(np.arange(items, dtype=np.int64)[:, None], count, axis=1)
    weight = np.zeros((items, count), dtype=np.float32)
    coo = similarity.tocoo()
    keep = coo.data > 0
    rows, columns, values = coo.row[keep], coo.col[keep], coo.data[keep]
    if count == 0 or rows.size == 0:
        return index, weight
    order = np.lexsort((columns, -values, rows))  # by row, then weight descending, then index
    rows, columns, values = rows[order], columns[order], values[order]
    starts = np.searchsorted(rows, np.arange(items))
    rank = np.arange(rows.size) - starts[rows]
    chosen = rank < count
    index[rows[chosen], rank[chosen]] = columns[chosen]
    weight[rows[chosen], rank[chosen]] = values[chosen]
    return index, weight


def cf_factors(matrix: sparse.csr_matrix, *, dim: int, seed: int = 0) -> np.ndarray:
    """(items, dim) item factors: the truncated SVD of the users x items positives with columns
    scaled by 1/sqrt(count) (PureSVD on cosine-normalised columns), V * sqrt(singular value).
    Rows of items without positives are 0; dim is capped by the matrix rank."""
    items = matrix.shape[1]
    counts = item_counts(matrix)
    usable = min(dim, min(matrix.shape) - 1)
    factors = np.zeros((items, dim), dtype=np.float32)
    if usable < 1 or matrix.nnz == 0:
        return factors
    scaled = matrix @ sparse.diags(1.0 / np.sqrt(np.maximum(counts, 1.0)))
    start = np.random.default_rng(seed).standard_normal(min(scaled.shape))
    _, values, right = svds(scaled.astype(np.float64), k=usable, v0=start)
    order = np.argsort(-values)
    factors[:, :usable] = (right[order].T * np.sqrt(values[order])).astype(np.float32)
    return factors


def align_factors(factors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotate factors onto reference (orthogonal Procrustes): factors from another user sample
    then live in the same basis as the reference's, so a network reads them alike."""
    left, _, right = np.linalg.svd(factors.T.astype(np.float64) @ reference)
    return (factors @ (left @ right)).astype(np.float32)


@dataclass(frozen=True)
class TableSpec:
    """What to compute for a model's item side (from TaNPConfig + TrainConfig)."""

    factor_dim: int
    content_dim: int
    neighbours: int
    shrink: float

    @property
    def feature_dim(self) -> int:
        """CF factors + content factors + has-content flag + standardised log popularity."""
        return self.factor_dim + self.content_dim + 2


@dataclass(frozen=True)
class ItemTables:
    """The item-side buffers of a model, computed from one set of users (train users, or the
    train users outside one fold while training): every array has one row per item."""

    popularity: np.ndarray  # (N,) positives among the users
    features: np.ndarray  # (N, F) the fixed point inputs (TableSpec.feature_dim)
    neighbour_index: np.ndarray  # (N, K)
    neighbour_weight: np.ndarray  # (N, K) shrunk cosine, 0 = padding
    seen: np.ndarray  # (N,) bool: some interaction of the users (positive or not)
    factors: np.ndarray  # (N, factor_dim) raw CF factors, the basis reference of other tables
    content: np.ndarray  # (N, content_dim) raw content factors, likewise


def content_matrix(prepared: Prepared, users: np.ndarray) -> sparse.csr_matrix | None:
    """(items, tags) TF-IDF of the users' tag assignments, rows L2-normalised; None without
    tags. A tag counts log(1 + times the users put it on the item)."""
    tags = prepared.interactions.tags
    if tags is None:
        return None
    chosen = np.isin(tags.users, users)
    items = len(prepared.interactions.item_ids)
    counts = sparse.csr_matrix(
        (np.ones(int(chosen.sum()), dtype=np.float64), (tags.items[chosen], tags.tags[chosen])),
        shape=(items, tags.count),
    )
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    document_frequency = np.asarray((counts > 0).sum(axis=0)).ravel()
    weighted = counts @ sparse.diags(np.log(items / (1.0 + document_frequency)))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    return (sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted).tocsr()


def content_factors(matrix: sparse.csr_matrix | None, *, items: int, dim: int) -> np.ndarray:
    """(items, dim) LSA coordinates of the tag TF-IDF rows (U * S of its truncated SVD);
    zeros without tags."""
    factors = np.zeros((items, dim), dtype=np.float32)
    if matrix is None or dim == 0 or matrix.nnz == 0:
        return factors
    usable = min(dim, min(matrix.shape) - 1)
    start = np.random.default_rng(0).standard_normal(min(matrix.shape))
    left, values, _ = svds(matrix, k=usable, v0=start)
    order = np.argsort(-values)
    factors[:, :usable] = (left[:, order] * values[order]).astype(np.float32)
    return factors


def _unit_mean_norm(values: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(values, axis=1)
    scale = norms[norms > 0].mean() if (norms > 0).any() else 1.0
    return (values / scale).astype(np.float32)


def item_tables(
    prepared: Prepared,
    users: np.ndarray,
    *,
    spec: TableSpec,
    reference: ItemTables | None = None,
) -> ItemTables:
    """Item tables from `users` only. With a reference (the tables of all train users), the
    factors are rotated onto the reference's basis, so a network trained on one reads the other
    alike; every block is scaled to a mean row norm of 1 and popularity standardised, so tables
    from fewer users look like the full ones."""
    interactions = prepared.interactions
    items = len(interactions.item_ids)
    matrix = positive_matrix(prepared, users)
    counts = item_counts(matrix)
    index, weight = neighbour_lists(matrix, counts, count=spec.neighbours, shrink=spec.shrink)
    factors = cf_factors(matrix, dim=spec.factor_dim)
    tags = content_matrix(prepared, users)
    content = content_factors(tags, items=items, dim=spec.content_dim)
    if reference is not None:
        factors = align_factors(factors, reference.factors) if spec.factor_dim else factors
        content = align_factors(content, reference.content) if spec.content_dim else content
    has_content = (
        np.zeros(items, dtype=np.float32)
        if tags is None
        else (np.asarray(tags.getnnz(axis=1)) > 0).astype(np.float32)
    )
    popularity = np.log1p(counts)
    popularity = (popularity - popularity.mean()) / (popularity.std() + 1e-8)
    features = np.concatenate(
        [
            _unit_mean_norm(factors),
            _unit_mean_norm(content),
            has_content[:, None],
            popularity[:, None].astype(np.float32),
        ],
        axis=1,
    )
    seen = np.zeros(items, dtype=bool)
    seen[interactions.items[np.isin(interactions.users, users)]] = True
    return ItemTables(
        popularity=counts,
        features=features.astype(np.float32),
        neighbour_index=index,
        neighbour_weight=weight,
        seen=seen,
        factors=factors,
        content=content,
    )


def fold_tables(
    prepared: Prepared, *, spec: TableSpec, full: ItemTables, folds: int, seed: int
) -> tuple[np.ndarray | None, list[ItemTables]]:
    """Each train user's fold (indexed by user; None without folds) and each fold's tables from
    the train users of the other folds, rotated onto `full`'s basis: no user's own rows describe
    the items of its episodes. Below 2 folds: the full tables alone."""
    if folds < 2:
        return None, [full]
    users = prepared.users_of("train")
    rng = np.random.default_rng(seed)
    fold_of_train_user = rng.permutation(users.size) % folds
    fold_of_user = np.zeros(len(prepared.interactions.user_ids), dtype=np.int64)
    fold_of_user[users] = fold_of_train_user
    tables = [
        item_tables(prepared, users[fold_of_train_user != fold], spec=spec, reference=full)
        for fold in range(folds)
    ]
    return fold_of_user, tables


@dataclass(frozen=True)
class TableTensors:
    """One ItemTables as the tensors a model's item buffers point to (neighbour rows sorted)."""

    popularity: torch.Tensor
    features: torch.Tensor
    neighbour_index: torch.Tensor
    neighbour_weight: torch.Tensor

    @classmethod
    def of(cls, tables: ItemTables, device: torch.device | str = "cpu") -> TableTensors:
        index, weight = sorted_neighbours(
            torch.from_numpy(tables.neighbour_index), torch.from_numpy(tables.neighbour_weight)
        )
        return cls(
            popularity=torch.from_numpy(tables.popularity).to(device),
            features=torch.from_numpy(tables.features).to(device),
            neighbour_index=index.to(device),
            neighbour_weight=weight.to(device),
        )

    def to(self, device: torch.device | str) -> TableTensors:
        return TableTensors(*(value.to(device) for value in vars(self).values()))

    def install(self, model: TaNP) -> None:
        """Point the model's item buffers at these tensors (no copy)."""
        model.item_popularity = self.popularity
        model.item_features = self.features
        model.affinity.neighbour_index = self.neighbour_index
        model.affinity.neighbour_weight = self.neighbour_weight
