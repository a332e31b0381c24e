"""Row-carrying torch tensors (``X.to_torch()``): every indexing form against plain torch, batches from a
DataLoader, and influence queries with one row.

Oracle: column 0 of the data holds each row's source row number, so which source rows an indexing
result reads is plain torch's answer for a tensor of those numbers indexed the same way; lineage must
name exactly those rows (per row when the result's axis 0 holds rows, else its one row).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

import traceprop_frames as tp
from traceprop_frames.tensor.torch_rows import RowTensor

SRC = "torch_rows_src"


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    arr = np.c_[np.arange(30.0), rng.normal(size=(30, 3))]  # column 0: the source row number
    X = tp.tensor(arr, source=SRC, dtype="float64")
    F = X[X[:, 1] > -0.6]  # a filter: tensor row i is source row want[i]
    Xt = F.to_torch()
    return Xt, Xt.as_plain().clone()


def _expected_rows(plain: torch.Tensor, key):
    """Source row of every element of ``plain[key]``, by plain torch on a tensor of row numbers."""
    src_rows = plain[:, :1].long().expand(plain.shape) if plain.ndim > 1 else plain.long()
    return src_rows[key]


def _check_lineage(out, want_rows: torch.Tensor) -> None:
    if want_rows.numel() == 0:
        assert not isinstance(out, RowTensor) or len(out.samples) == 0 or out.ndim and out.shape[0] > 0
        return
    per_entry = want_rows.ndim > 0 and bool(
        (want_rows.reshape(want_rows.shape[0], -1) == want_rows.reshape(want_rows.shape[0], -1)[:, :1]).all()
    )
    one_row = bool((want_rows == want_rows.reshape(-1)[0]).all())
    if not (per_entry or one_row):
        assert type(out) is torch.Tensor  # rows mixed along axis 0: a plain tensor, like any other op
        return
    assert isinstance(out, RowTensor)
    if len(out.samples) == 1 and one_row:
        assert out.sources() == {SRC: np.array([int(want_rows.reshape(-1)[0])])}
        assert [r.row for r in out.trace(0)] == [int(want_rows.reshape(-1)[0])]
        return
    assert per_entry and len(out.samples) == out.shape[0]
    first = want_rows.reshape(want_rows.shape[0], -1)[:, 0].tolist()
    for j, r in enumerate(first):
        assert out.sources(rows=[j], direct=True)[SRC].tolist() == [r]
        assert [s.row for s in out.trace(j)] == [r]
    assert out.sources()[SRC].tolist() == sorted(set(first))


KEYS = [
    0, 3, -1, -2, np.int64(4), torch.tensor(2), True, None, Ellipsis,
    slice(1, 9, 3), slice(None, None, 2), slice(-5, None), slice(5, 5), slice(None, 2),
    (Ellipsis, 0), (0, Ellipsis), (None, 0), (slice(None), None), (slice(None), 1), (2, 1), (2, slice(0, 2)),
    (slice(2, 8, 2), slice(0, 2)), (None, slice(None), 0), (Ellipsis, None),
    [1, 2], [4, 0, 4], [], (slice(None), [0, 2]), ([0, 1], slice(None)), ([0, 3], [1, 2]),
    torch.tensor([4, 0, 4]), torch.tensor([-1, 2]), torch.tensor([], dtype=torch.long),
    torch.tensor([[0, 1], [2, 2]]), (torch.tensor([3, 1]), 1), (torch.tensor([3, 1]), [0, 2]),
    (1, [0, 0, 2]), (slice(None), slice(0, 0)), np.array([2, 5]),
]  # fmt: skip


@pytest.mark.parametrize("key", KEYS, ids=[repr(k)[:40] for k in KEYS])
def test_indexing_matches_plain_torch_and_keeps_rows(rows, key):
    Xt, plain = rows
    out = Xt[key]
    want = plain[key]
    assert torch.equal(torch.as_tensor(out).as_subclass(torch.Tensor), want) and out.shape == want.shape
    _check_lineage(out, _expected_rows(plain, key))


@pytest.mark.parametrize("make_key", [lambda p: p[:, 1] > 0, lambda p: (p[:, 1] > 0).numpy()])
def test_bool_row_masks(rows, make_key):
    Xt, plain = rows
    key = make_key(plain)
    out = Xt[key]
    assert torch.equal(out.as_plain(), plain[key])
    _check_lineage(out, _expected_rows(plain, key))
    two_d = plain > 0  # an element mask: a 1-D result, each element from one row
    _check_lineage(Xt[two_d], _expected_rows(plain, two_d))


@pytest.mark.parametrize(
    "chain",
    [
        lambda x: x[3][None],
        lambda x: x[3][1],
        lambda x: x[3][None][0],
        lambda x: x[:6][None],
        lambda x: x[[1, 1, 1]][:, 0],
        lambda x: x[2:9][::2][-1],
        lambda x: x[:, None][4:6, 0],
    ],
)
def test_chained_indexing(rows, chain):
    Xt, plain = rows
    out, want = chain(Xt), chain(plain)
    assert torch.equal(torch.as_tensor(out).as_subclass(torch.Tensor), want)
    src_rows = plain[:, :1].long().expand(plain.shape)
    _check_lineage(out, chain(src_rows))


@pytest.mark.parametrize("key", [100, -100, torch.tensor([0.5]), (0, 0, 0), slice(None, None, -1)])
def test_bad_keys_raise_as_plain_torch_does(rows, key):
    Xt, plain = rows
    with pytest.raises(Exception) as plain_err:
        plain[key]
    with pytest.raises(type(plain_err.value)):
        Xt[key]


def _loaders(Xt, plain, y, **kw):
    g = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)]
    return (
        DataLoader(TensorDataset(Xt, y), shuffle=True, generator=g[0], **kw),
        DataLoader(TensorDataset(plain, y), shuffle=True, generator=g[1], **kw),
    )


@pytest.mark.parametrize("collate_fn", [None, lambda b: torch.stack([s[0] for s in b])])
def test_shuffled_loader_batches_match_plain_and_carry_rows(rows, collate_fn):
    Xt, plain = rows
    y = torch.arange(len(plain), dtype=torch.float64)
    traced, ref = _loaders(Xt, plain, y, batch_size=4, collate_fn=collate_fn)
    n_seen = 0
    for got, want in zip(traced, ref):
        xb = got[0] if collate_fn is None else got
        wx = want[0] if collate_fn is None else want
        assert torch.equal(xb.as_plain(), wx)
        if collate_fn is None:
            assert torch.equal(got[1], want[1]) and type(got[1]) is torch.Tensor
        assert isinstance(xb, RowTensor) and len(xb.samples) == len(xb)
        assert xb.sources(direct=True)[SRC].tolist() == sorted(wx[:, 0].long().tolist())
        assert [xb.trace(i)[0].row for i in range(len(xb))] == wx[:, 0].long().tolist()
        n_seen += len(xb)
    assert n_seen == len(plain)


def test_loader_over_subset_and_plain_datasets(rows):
    Xt, plain = rows
    y = torch.zeros(len(plain))
    sub = DataLoader(Subset(TensorDataset(Xt, y), [5, 2, 7]), batch_size=3)
    xb, _ = next(iter(sub))
    assert xb.samples.tolist() == [5, 2, 7] and torch.equal(xb.as_plain(), plain[[5, 2, 7]])
    ds = TensorDataset(plain, y)  # no row-carrying tensor: samples fetched one by one, as torch does
    assert [tuple(t.tolist() for t in s) for s in ds.__getitems__([3, 1])] == [
        tuple(t.tolist() for t in ds[i]) for i in (3, 1)
    ]


def test_one_row_queries_equal_the_general_path(rows):
    Xt, plain = rows
    X = tp.tensor(np.c_[np.arange(12.0), np.ones(12)], source="one_row_src")
    Z = (X - X.mean(axis=0)) / (X.std(axis=0) + 1)
    Z = Z[[3, 0, 7]]
    lin = Z.lineage
    for i in range(3):
        for direct in (False, True):
            got, want = Z.sources(rows=[i], direct=direct), lin.sources([i], direct=direct)
            assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
            assert Z.trace(i, direct=direct) == lin.trace(i, direct=direct)
    assert Z.sources(rows=[1])["one_row_src"].tolist() == list(range(12))  # mean/std read every row
    assert Z.sources(rows=1, direct=True)["one_row_src"].tolist() == [0]


def test_creation_hashes_lazily_and_persists(tmp_path):
    from traceprop_frames.lineage import REGISTRY

    arr = np.arange(12.0).reshape(6, 2)
    X = tp.tensor(arr, source="lazy_src")
    src = REGISTRY.get(int(X.lineage.ids[0]) >> 40)
    assert not src.is_hashed  # making the tensor hashed nothing
    tracked = tp.track(__import__("pandas").DataFrame(arr, columns=["0", "1"]), "lazy_src_frame")
    assert src.sha256 == tracked.tp.trace(0)[0].sha256  # the same content hash tp.track records
    assert X.trace(0)[0].sha256 == src.sha256 and X.trace(0)[0].sha256_ok is None
    import pickle

    again = pickle.loads(pickle.dumps(X.lineage))
    assert again.sources([4])["lazy_src"].tolist() == [4]


def test_influence_for_one_row_given_as_a_row_1d_or_2d():
    from traceprop_frames.attribution import GradientStore, TrainingContext, compute_influence_scores

    rng = np.random.default_rng(3)
    X = tp.tensor(rng.normal(size=(64, 4)), source="influence_one_row_src")
    Xt = X.to_torch()
    y = torch.tensor((np.asarray(X)[:, 0] > 0).astype(np.float32)).reshape(-1, 1)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    store = GradientStore(k=32, path=None)
    with TrainingContext(model, store) as ctx:
        for i, (xb, yb) in enumerate(DataLoader(TensorDataset(Xt, y), batch_size=16, shuffle=True)):
            opt.zero_grad()
            ctx.backward(torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb), i)
            opt.step()
    several = compute_influence_scores(model, store, Xt[:2].as_plain(), top_k=3)
    want = list(several)[0]  # several rows: one list of (sample, score) pairs per row
    assert len(list(several)) == 2 and len(want) == 3
    for one in (Xt[0], Xt[:1], Xt[0][None], Xt[0].as_plain(), Xt[0].as_plain().numpy()):
        pairs = list(compute_influence_scores(model, store, one, top_k=3))
        assert [i for i, _ in pairs] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in pairs], [s for _, s in want], rtol=1e-5)
