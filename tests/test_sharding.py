"""Tests `../w2v_jax/sharding.py`: the sharded step equals the single-device step, with the
tables split by vocabulary rows (``ROWS``) or by dimensions (``DIMS``).

conftest.py gives this process 4 CPU devices (``--xla_force_host_platform_device_count=4``);
meshes of 4 and 2 of them are compared with a plain reference step (jnp gathers, ``.at[].add``)
over a few steps, for skip-gram and CBOW with negative sampling NCE and hierarchical softmax. V and
D are chosen so that some tables need padding (rows, and columns: D = 6 on 4 devices), and the
batches repeat ids.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax import gradients, hlo, losses, objectives, optim, sharding
from w2v_jax import inputs as inputs_lib
from w2v_jax import step as step_lib

V, D, B, K, C = 11, 6, 8, 3, 4  # 11 rows -> 12 on 4 or 2 devices; HS node rows 10 -> 12 / 10
LR = 0.05
STEPS = 3


def _devices(n):
    if len(jax.devices()) < n:
        pytest.skip(f"needs {n} devices, have {len(jax.devices())} (XLA_FLAGS from conftest.py)")
    return jax.devices()[:n]


COUNTS = np.array([40, 30, 20, 12, 9, 7, 5, 4, 3, 2, 1])


def _objective(loss):
    return {
        "ns": objectives.sgns(K),
        "nce": objectives.nce(K),
        "hs": objectives.hierarchical_softmax(),
    }[loss]


def _inputs(model):
    return inputs_lib.skip_gram() if model == "sg" else inputs_lib.cbow()


def _consts(loss):
    return jax.device_put(_objective(loss).make_consts(COUNTS))


def _init_params(loss, seed=0):
    rng = np.random.default_rng(seed)
    objective = _objective(loss)
    return {
        "center_vecs": rng.normal(0, 0.3, (V, D)).astype(np.float32),
        objective.table: rng.normal(0, 0.3, (objective.table_rows(V), D)).astype(np.float32),
    }


def _batch(model, step, b=B):
    """A batch with repeated ids (V is tiny, plus forced repeats) and masked-out rows."""
    rng = np.random.default_rng(100 + step)
    center = rng.integers(0, V, b).astype(np.int32)
    center[1] = center[0]  # the same input word twice
    mask = np.ones(b, np.float32)
    mask[-1] = 0.0  # a padding row
    mask[2] = 0.5  # a fractional weight scales the update
    batch = {"center": center, "mask": mask}
    if model == "sg":
        context = rng.integers(0, V, b).astype(np.int32)
        context[3] = center[3]  # o == c: the same id in both tables
        batch["context"] = context
    else:
        context = rng.integers(0, V, (b, C)).astype(np.int32)
        context[0, 1] = context[0, 0]  # a word twice in one window
        ctx_mask = (rng.random((b, C)) < 0.8).astype(np.float32)
        ctx_mask[:, 0] = 1.0
        ctx_mask[-1] = 0.0  # the padding row has an empty window: h = 0
        batch.update(context=context, context_mask=ctx_mask)
    return batch


BASE_KEY = jax.random.key(11)


def _key(step):
    """The key a step folds from the base key and its step count, as every step does."""
    return jax.random.fold_in(BASE_KEY, step)


def _reference_step(params, consts, batch, key, lr, model, loss):
    """One device, written out: the objective's targets, plain gathers, gradients.py, and
    ``r -= lr * mask_i * grad_row`` scatter-added."""
    objective, inputs = _objective(loss), _inputs(model)
    center_vecs = params["center_vecs"]
    mask_B = jnp.asarray(batch["mask"])
    if model == "sg":
        h_BxD = center_vecs[batch["center"]]
    else:
        h_BxD = jax.vmap(losses.cbow_hidden, in_axes=(0, 0, None))(
            center_vecs[batch["context"]], batch["context_mask"], True
        )
    tg = objective.targets(consts, inputs.predicted(batch), key)
    out = params[objective.table]
    rows = out[tg.ids]
    if loss == "ns":
        loss_B, dh, du_o, du_k = gradients.neg_sampling_grads_batch(h_BxD, rows[:, 0], rows[:, 1:])
        drows = jnp.concatenate([du_o[:, None], du_k], axis=1)
    elif loss == "nce":
        loss_B, dh, du_o, du_k = gradients.nce_grads_batch(
            h_BxD, rows[:, 0], rows[:, 1:], tg.bias[:, 0], tg.bias[:, 1:]
        )
        drows = jnp.concatenate([du_o[:, None], du_k], axis=1)
    else:
        loss_B, dh, drows = gradients.hierarchical_softmax_grads_batch(
            h_BxD, rows, 1 - tg.labels, tg.mask
        )
    w_B = -lr * mask_B
    new = dict(params)
    new[objective.table] = out.at[tg.ids].add(w_B[:, None, None] * drows)
    if model == "sg":
        new["center_vecs"] = center_vecs.at[batch["center"]].add(w_B[:, None] * dh)
    else:
        d_ctx = jax.vmap(gradients.cbow_context_grads, in_axes=(0, 0, None, None))(
            dh, batch["context_mask"], True, "word2vec"
        )
        new["center_vecs"] = center_vecs.at[batch["context"]].add(w_B[:, None, None] * d_ctx)
    return new, jnp.sum(mask_B * loss_B)


def _run_reference(model, loss, steps=STEPS):
    params = {k: jnp.asarray(v) for k, v in _init_params(loss).items()}
    consts = _consts(loss)
    step = jax.jit(lambda p, b, k: _reference_step(p, consts, b, k, LR, model, loss))
    loss_sums = []
    for s in range(steps):
        params, loss_sum = step(params, _batch(model, s), _key(s))
        loss_sums.append(float(loss_sum))
    return {k: np.asarray(v) for k, v in params.items()}, loss_sums


SGD = optim.make_optimizer("sgd", LR, LR)  # plain SGD at a constant learning rate


LAYOUTS = [sharding.ROWS, sharding.DIMS]


def _sharded_step(mesh, model, loss, tx=SGD, dup_cap=float("inf"), layout=sharding.ROWS):
    step = sharding.make_sharded_step(
        mesh, _objective(loss), _inputs(model), tx, dup_cap=dup_cap, layout=layout
    )
    return jax.jit(step, donate_argnums=0)


def _sharded_state(mesh, loss, tx=SGD, seed=0, layout=sharding.ROWS):
    params = {k: jnp.asarray(v) for k, v in _init_params(loss, seed).items()}
    return sharding.shard_state(step_lib.init_state(params, tx), mesh, layout=layout)


def _global_batch(mesh, model, s):
    batch = sharding.shard_batch(_batch(model, s), mesh)
    batch["progress"] = jnp.float32(0.0)
    return batch


def _run_sharded(mesh, model, loss, steps=STEPS, layout=sharding.ROWS):
    """Returns the trained sharded params and the per-step loss sums."""
    state, step, consts = (
        _sharded_state(mesh, loss, layout=layout),
        _sharded_step(mesh, model, loss, layout=layout),
        _consts(loss),
    )
    loss_sums = []
    for s in range(steps):
        state, metrics = step(state, consts, _global_batch(mesh, model, s), BASE_KEY)
        loss_sums.append(float(metrics["loss_sum"]))
    return state.params, loss_sums


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.name)
@pytest.mark.parametrize("n", [4, 2])
@pytest.mark.parametrize("loss", ["ns", "nce", "hs"])
@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_sharded_step_matches_single_device(model, loss, n, layout):
    mesh = sharding.make_mesh(_devices(n))
    sharded, sharded_losses = _run_sharded(mesh, model, loss, layout=layout)
    want, want_losses = _run_reference(model, loss)
    got = sharding.unshard_params(sharded, V, D)
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
        # and the step did train (the comparison is not between two untouched tables)
        assert not np.allclose(want[name], _init_params(loss)[name])
    np.testing.assert_allclose(sharded_losses, want_losses, rtol=1e-5)


@pytest.mark.parametrize("n", [4, 2])
def test_tables_are_split_not_replicated(n):
    mesh = sharding.make_mesh(_devices(n))
    params = sharding.shard_params(_init_params("hs"), mesh)
    for name, table in params.items():
        vp = sharding.padded_rows(sharding.table_rows(name, V), n)
        assert table.shape == (vp, D)
        shards = table.addressable_shards
        assert len(shards) == n
        assert {s.data.shape for s in shards} == {(vp // n, D)}  # 1/n of the rows per device
        assert sorted(s.index[0].start or 0 for s in shards) == list(range(0, vp, vp // n))
    # padding rows are zero and stay zero through training
    trained, _ = _run_sharded(mesh, "sg", "hs")
    node = np.asarray(jax.device_get(trained["node_vecs"]))
    np.testing.assert_array_equal(node[V - 1 :], 0.0)


def test_tables_split_by_dimensions_hold_every_row_at_some_columns():
    """DIMS on 4 devices: D = 6 is padded to 8 columns, 2 per device, every row on each; the
    padding columns are zero and stay zero through training."""
    n = 4
    mesh = sharding.make_mesh(_devices(n))
    params = sharding.shard_params(_init_params("hs"), mesh, layout=sharding.DIMS)
    for name, table in params.items():
        rows = sharding.table_rows(name, V)
        assert table.shape == (rows, 8)
        shards = table.addressable_shards
        assert {s.data.shape for s in shards} == {(rows, 2)}  # 1/n of the columns per device
        assert sorted(s.index[1].start or 0 for s in shards) == [0, 2, 4, 6]
    trained, _ = _run_sharded(mesh, "cbow", "hs", layout=sharding.DIMS)
    for name, table in trained.items():
        host = np.asarray(jax.device_get(table))
        np.testing.assert_array_equal(host[:, D:], 0.0, err_msg=name)
        assert not np.allclose(host[:, :D], _init_params("hs")[name])


HLO_SHAPES = dict(n=4, v=4096, d=8, b=16, k=5)  # a table shard is larger than the batch's rows


def _compiled_collectives(layout):
    """The collectives of the compiled skip-gram SGNS step on 4 devices (``hlo_collectives``)."""
    n, v, d, b, k = (HLO_SHAPES[x] for x in "nvdbk")
    mesh = sharding.make_mesh(_devices(n))
    rng = np.random.default_rng(0)
    tables = {name: jnp.zeros((v, d), jnp.float32) for name in ("center_vecs", "outside_vecs")}
    state = sharding.shard_state(step_lib.init_state(tables, SGD), mesh, layout=layout)
    batch = sharding.shard_batch(
        {
            "center": rng.integers(0, v, b).astype(np.int32),
            "context": rng.integers(0, v, b).astype(np.int32),
            "mask": np.ones(b, np.float32),
        },
        mesh,
    )
    objective = objectives.sgns(k)
    consts = jax.device_put(objective.make_consts(np.arange(v, 0, -1)))
    batch["progress"] = jnp.float32(0.0)
    step = sharding.make_sharded_step(mesh, objective, inputs_lib.skip_gram(), SGD, layout=layout)
    lowered = jax.jit(step).lower(state, consts, batch, jax.random.key(0))
    return hlo.hlo_collectives(lowered.compile().as_text())


def test_compiled_step_moves_rows_not_tables():
    """The HLO has 4 collectives in a chain, on batch rows; nothing table-sized moves."""
    n, v, d, b, k = (HLO_SHAPES[x] for x in "nvdbk")
    ops = _compiled_collectives(sharding.ROWS)
    # ids -> rows -> gradient rows (+ loss, examples) -> grad-norm scalar: one chain, so no two
    # collectives can run concurrently (XLA:CPU can deadlock on those with more simulated
    # devices than threads), and the only all-reduce is a scalar at the end
    assert [o["op"] for o in ops] == ["all-gather", "reduce-scatter", "all-gather", "all-reduce"]
    assert ops[-1]["result_bytes"] <= 8, ops[-1]
    shard_bytes = v // n * d * 4
    # the largest buffer: both tables' rows for the whole batch, plus two stats rows per device
    batch_row_bytes = (b * (1 + 1 + k) + 2 * n) * d * 4
    assert batch_row_bytes < shard_bytes
    for o in ops:
        assert max(o["operand_bytes"], o["result_bytes"]) <= batch_row_bytes, o


def test_compiled_dims_step_moves_scores_not_rows():
    """Split by dimensions, a step's collectives carry the batch's ids and masks, the [B, K+1]
    scores and the gradient norm: nothing row-sized, let alone table-sized."""
    b, k = HLO_SHAPES["b"], HLO_SHAPES["k"]
    ops = _compiled_collectives(sharding.DIMS)
    scores_bytes = b * (1 + k) * 4
    # batch (center, context, mask packed as one int32 array) -> scores -> grad-norm scalar:
    # one chain, as in the row layout
    assert [o["op"] for o in ops] == ["all-gather", "all-reduce", "all-reduce"], ops
    assert ops[0]["result_bytes"] == b * 3 * 4, ops[0]
    assert ops[1]["result_bytes"] == scores_bytes, ops[1]
    assert ops[2]["result_bytes"] <= 8, ops[2]
    for o in ops:  # one row of the batch would already be d * 4 bytes per id
        assert max(o["operand_bytes"], o["result_bytes"]) <= scores_bytes, o


def test_dims_layout_refuses_objectives_it_cannot_split():
    mesh = sharding.make_mesh(_devices(2))
    with pytest.raises(ValueError, match="dense"):
        sharding.make_sharded_step(
            mesh, objectives.softmax(), _inputs("sg"), SGD, layout=sharding.DIMS
        )
    penalised = dataclasses.replace(objectives.sgns(K), through_scores=False)
    with pytest.raises(ValueError, match="through_scores=False"):
        sharding.make_sharded_step(mesh, penalised, _inputs("sg"), SGD, layout=sharding.DIMS)
    with pytest.raises(ValueError, match="--shard-by must be one of"):
        sharding.layout_named("columns")


def test_step_rejects_bad_inputs():
    mesh = sharding.make_mesh(_devices(4))
    state = _sharded_state(mesh, "ns")
    step = sharding.make_sharded_step(mesh, _objective("ns"), _inputs("sg"), SGD)
    batch, consts = _batch("sg", 0), _consts("ns")
    batch["progress"] = np.float32(0.0)
    with pytest.raises(KeyError, match="context"):
        step(state, consts, {k: v for k, v in batch.items() if k != "context"}, BASE_KEY)
    odd = {k: (v[:6] if np.ndim(v) else v) for k, v in batch.items()}
    with pytest.raises(ValueError, match="multiple of 4"):
        step(state, consts, odd, BASE_KEY)
    with pytest.raises(ValueError, match="dense"):
        sharding.make_sharded_step(mesh, objectives.softmax(), _inputs("sg"), SGD)


def test_host_slice_partitions():
    parts = [sharding.host_slice(10, i, 3) for i in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 6), (6, 10)]


def test_checkpoint_round_trip_and_reshard(tmp_path):
    """Saved from 4 devices, restored onto 4 and onto 2; an older checkpoint is replaced."""
    mesh4 = sharding.make_mesh(_devices(4))
    params, _ = _run_sharded(mesh4, "cbow", "hs", steps=1)
    want = sharding.unshard_params(params, V)
    path = tmp_path / "ckpt"
    sharding.save_sharded(path, sharding.shard_params(_init_params("hs", seed=5), mesh4), V)
    sharding.save_sharded(path, params, V, extra={"step": 1})
    assert not (tmp_path / "ckpt.partial").exists() and not (tmp_path / "ckpt.old").exists()
    for n, layout in ((4, sharding.ROWS), (2, sharding.ROWS), (4, sharding.DIMS)):
        mesh = sharding.make_mesh(_devices(n))
        restored, meta = sharding.restore_sharded(path, mesh, layout=layout)
        assert meta["extra"] == {"step": 1}
        target = sharding.table_sharding(mesh, layout=layout)
        assert restored["node_vecs"].sharding.is_equivalent_to(target, 2)
        got = sharding.unshard_params(restored, V, D)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    with pytest.raises(FileNotFoundError, match="meta.json"):
        sharding.restore_sharded(tmp_path / "missing", mesh4)
    with pytest.raises(ValueError, match="split by dimensions"):
        sharding.save_sharded(tmp_path / "dims", restored, V)


def test_checkpoint_keeps_tables_whose_names_share_a_prefix(tmp_path):
    # "center_vecs" is a prefix of "center_vecs.acc": each table lists only its own shards.
    mesh = sharding.make_mesh(_devices(2))
    host = _init_params("ns")
    tables = {"center_vecs": host["center_vecs"], "center_vecs.acc": host["outside_vecs"]}
    sharding.save_sharded(tmp_path / "ckpt", sharding.shard_params(tables, mesh), V)
    restored, _ = sharding.restore_sharded(tmp_path / "ckpt", mesh)
    got = sharding.unshard_params(restored, V)
    for name, table in tables.items():
        np.testing.assert_array_equal(got[name], table)


def test_hlo_collectives_parses_operands():
    text = """
  %p.1 = f32[4,3]{1,0} parameter(0)
  %ag = f32[16,3]{1,0} all-gather(%p.1), channel_id=1, dimensions={0}
  %ar-start = (f32[], f32[]) all-reduce-start(%x, %y), to_apply=%add
  %ar-done = (f32[], f32[]) all-reduce-done(%ar-start)
"""
    ops = hlo.hlo_collectives(text)
    assert [(o["op"], o["result_bytes"], o["operand_bytes"]) for o in ops] == [
        ("all-gather", 192, 48),
        ("all-reduce", 8, 0),
    ]


ADAGRAD = optim.make_optimizer("adagrad", 0.1)
ADAM = optim.make_optimizer("adam", 0.01)  # two moments shaped like the table and a scalar count
INF = float("inf")


@pytest.mark.parametrize(
    "model,loss,tx,dup_cap",
    [(m, lo, SGD, INF) for m in ("sg", "cbow") for lo in ("ns", "nce", "hs")]
    + [("sg", "ns", SGD, 2.0), ("cbow", "hs", SGD, 2.0)]
    + [("sg", "nce", ADAGRAD, 64.0), ("cbow", "hs", ADAGRAD, 64.0), ("sg", "ns", ADAM, 64.0)]
    + [("sg", "ns", "combine", 2.0), ("cbow", "hs", "combine", INF)],
    ids=lambda x: x if isinstance(x, str) else None,
)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.name)
def test_sharded_step_matches_the_trainers_step(model, loss, tx, dup_cap, layout):
    """The same batch and key through ``step.make_step`` on one device and through the 2-device
    sharded step give the same tables and optimizer state: one model and one update rule, two
    layouts (plain SGD, Adagrad and Adam, with and without the duplicate cap, and SGD with the GPU's
    sum of repeated rows before the scatter, forced on here on CPU)."""
    combine = tx == "combine"
    tx = SGD if combine else tx
    objective, inputs = _objective(loss), _inputs(model)
    params = {k: jnp.asarray(v) for k, v in _init_params(loss).items()}
    consts = _consts(loss)
    state = step_lib.init_state(params, tx)
    single_step = step_lib.make_step(objective, inputs, tx, dup_cap=dup_cap)
    mesh = sharding.make_mesh(_devices(2))
    sharded_step = jax.jit(
        sharding.make_sharded_step(
            mesh, objective, inputs, tx, dup_cap=dup_cap, combine_duplicates=combine, layout=layout
        )
    )
    sharded = sharding.shard_state(state, mesh, layout=layout)
    for s in range(2):
        batch = {k: jnp.asarray(v) for k, v in _batch(model, s).items()}
        batch["progress"] = jnp.float32(0.25 * s)
        state, m1 = single_step(state, consts, batch, BASE_KEY)
        sharded, m2 = sharded_step(
            sharded,
            consts,
            _global_batch(mesh, model, s) | {"progress": batch["progress"]},
            BASE_KEY,
        )
        np.testing.assert_allclose(m2["loss_sum"], m1["loss_sum"], rtol=1e-5)
        np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-5)
    back = sharding.unshard_params(sharded.params, V, D)
    for name in params:
        np.testing.assert_allclose(
            back[name], np.asarray(state.params[name]), rtol=1e-5, atol=1e-6, err_msg=name
        )
        assert not np.allclose(back[name], params[name])
    host = jax.device_get(sharded.opt_state)
    for a, b in zip(
        jax.tree.leaves(host), jax.tree.leaves(jax.device_get(state.opt_state)), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(a)[: np.shape(b)[0], :D] if np.ndim(b) == 2 else a, b, rtol=1e-5, atol=1e-6
        )
    assert int(sharded.step) == int(state.step) == 2


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.name)
@pytest.mark.parametrize("loss", ["ns", "hs"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_state_built_shard_by_shard_equals_the_sharded_one_device_state(loss, n, layout):
    """sharding.init_state makes each device's part alone; the tables are those of the
    one-device initialisation, split (padding zero), for plain SGD and Adagrad."""
    mesh = sharding.make_mesh(_devices(n))
    # 1003 rows and 10 columns: rows padded on 2, 3 and 4 devices, columns on 3 and 4
    objective, vocab, dim = _objective(loss), 1003, 10
    key = jax.random.split(jax.random.key(3))[0]
    for tx in (optim.make_optimizer("sgd", 0.025), optim.make_optimizer("adagrad", 0.1)):
        want = sharding.shard_state(
            step_lib.init_state(step_lib.init_params(objective, vocab, dim, key), tx),
            mesh,
            layout=layout,
        )
        got = sharding.init_state(objective, vocab, dim, key, tx, mesh, layout=layout)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for name, table in got.params.items():
            assert table.sharding.is_equivalent_to(want.params[name].sharding, 2), name
            assert len({s.data.shape for s in table.addressable_shards}) == 1  # 1/n each
            np.testing.assert_array_equal(np.asarray(table), np.asarray(want.params[name]))
        rows = {name: int(objective.table_rows(vocab)) for name in got.params}
        rows["center_vecs"] = vocab
        for leaf_got, leaf_want in zip(
            jax.tree.leaves(sharding.unpad_state(sharding.unshard_state(got), rows, vocab, dim)),
            jax.tree.leaves(sharding.unpad_state(sharding.unshard_state(want), rows, vocab, dim)),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(leaf_got), np.asarray(leaf_want))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.name)
@pytest.mark.parametrize("n", [2, 3])
def test_a_streamed_state_writes_the_checkpoint_of_the_gathered_one(tmp_path, n, layout):
    """Checkpoints of a mesh stream each table in row blocks (no process holds one whole); the
    file is byte for byte the one the gathered, unpadded state gives, and the tables assemble."""
    from w2v_jax.checkpoint import ArrayBlocks, drain, load_checkpoint, save_checkpoint

    mesh = sharding.make_mesh(_devices(n))
    objective, vocab, dim = _objective("hs"), 1003, 16  # DIMS on 3 devices: 18 columns
    key = jax.random.key(5)
    tx = optim.make_optimizer("adagrad", 0.1)
    state = sharding.init_state(objective, vocab, dim, key, tx, mesh, layout=layout)
    rows = {name: int(objective.table_rows(vocab)) for name in state.params}
    rows["center_vecs"] = vocab
    whole = sharding.unpad_state(sharding.unshard_state(state), rows, vocab, dim)
    # 7 rows per block: 144 blocks, the last one overlapping its neighbour
    streamed = sharding.streamed_state(state, rows, dim=dim, block_bytes=7 * dim * 4)
    assert all(isinstance(t, ArrayBlocks) for t in streamed.params.values())

    def payload(s):
        return {"params": s.params, "opt_state": s.opt_state, "step": s.step}

    save_checkpoint(tmp_path / "whole.w2v", payload(whole))
    save_checkpoint(tmp_path / "streamed.w2v", payload(streamed))
    assert (tmp_path / "whole.w2v").read_bytes() == (tmp_path / "streamed.w2v").read_bytes()
    back = load_checkpoint(tmp_path / "streamed.w2v")
    for name, table in whole.params.items():
        np.testing.assert_array_equal(back["params"][name], table)
        np.testing.assert_array_equal(sharding.gather_blocks(streamed.params[name]), table)
    drain(payload(streamed))  # what the processes that do not write run: no file, no error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.w2v", "whole.w2v"]


def test_array_blocks_that_give_the_wrong_size_fail_the_write(tmp_path):
    from w2v_jax.checkpoint import ArrayBlocks, save_checkpoint

    short = ArrayBlocks((4, 2), np.float32, lambda: iter([np.zeros((3, 2), np.float32)]))
    with pytest.raises(ValueError, match="gave 24 bytes for"):
        save_checkpoint(tmp_path / "c.w2v", {"t": short})
    assert list(tmp_path.iterdir()) == []  # the atomic write left nothing, no temp file
