r"""A new word2vec loss, defined outside the library: a ranking (hinge) loss over negatives.

    python examples/custom_objective.py                 # wiki-sample, 1 epoch, ~1 minute
    python examples/custom_objective.py --quick         # lee corpus, 2 epochs, ~15 s (the test)

For a pair (c, o) and K noise words k, with scores s_w = u_w . v_c and a margin m,

    J = sum_k max(0, m - s_o + s_k)

(Collobert & Weston 2008 rank the observed word above noise the same way). With A the set of
active negatives (m - s_o + s_k > 0):

    dJ/ds_o = -|A|,  dJ/ds_k = [k in A]
    dJ/dv_c = sum_{k in A} (u_k - u_o),  dJ/du_o = -|A| v_c,  dJ/du_k = [k in A] v_c

The script writes the per-example loss and this hand gradient, reuses the library's SGNS
targets (the predicted word and K draws from the unigram^0.75 noise table), checks the hand
gradient against ``jax.grad`` with the helper the built-in objectives are tested with, and
trains it with the ordinary trainer: nothing in ``w2v_jax`` changes.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp

import w2v_jax
from w2v_jax import objectives

MARGIN = 1.0


def margin_loss(v_c, rows, targets):
    """Per example: ``rows`` [K+1, D] = [u_o, u_1..u_K]; returns [] the hinge loss J."""
    scores = rows @ v_c
    return jnp.sum(jnp.maximum(0.0, MARGIN - scores[0] + scores[1:]))


def margin_row_grads(h_BxD, rows_BxTxD, targets):
    """Batched hand gradient: ``(loss [B], dJ/dh [B, D], dJ/drows [B, K+1, D])``."""
    scores_BxT = jnp.einsum("btd,bd->bt", rows_BxTxD, h_BxD)
    slack_BxK = MARGIN - scores_BxT[:, :1] + scores_BxT[:, 1:]
    active_BxK = (slack_BxK > 0).astype(h_BxD.dtype)
    loss_B = jnp.sum(jnp.maximum(0.0, slack_BxK), axis=1)
    n_B = jnp.sum(active_BxK, axis=1)
    g_BxT = jnp.concatenate([-n_B[:, None], active_BxK], axis=1)  # dJ/ds_t
    dh_BxD = jnp.einsum("bt,btd->bd", g_BxT, rows_BxTxD)
    drows_BxTxD = g_BxT[:, :, None] * h_BxD[:, None, :]
    return loss_B, dh_BxD, drows_BxTxD


def margin_objective(negative: int = 5, ns_exponent: float = 0.75) -> objectives.Objective:
    """The SGNS objective's targets and tables, with the margin loss's math."""
    return dataclasses.replace(
        objectives.sgns(negative, ns_exponent),
        name="margin",
        row_grads=margin_row_grads,
        row_loss=margin_loss,
        kernel=None,  # the fused kernels compute SGNS, not this
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="wiki-sample")
    ap.add_argument("--quick", action="store_true", help="lee corpus, small and short")
    a = ap.parse_args(argv)

    objective = margin_objective()
    with jax.enable_x64(True):  # the check in float64, as the library's tests do
        err = objectives.check_gradients(objective)
    print(f"hand gradient vs jax.grad: max relative error {err:.1e}")

    corpus = a.corpus
    cfg = w2v_jax.override(w2v_jax.Config(), epochs=1, alpha=0.01, update="sparse")
    if a.quick:
        corpus = "lee"
        cfg = w2v_jax.override(cfg, dim=32, min_count=3, batch_size=1024, epochs=2, alpha=0.025)
    result = w2v_jax.train(corpus, cfg, objective=objective, progress=not a.quick)
    print("epoch losses:", ", ".join(f"{x:.3f}" for x in result.epoch_loss))
    vecs = result.vectors()
    for w in ("france", "war", "city", "government"):
        if w in vecs:
            near = ", ".join(f"{n} {s:.2f}" for n, s in vecs.most_similar(w, topn=5))
            print(f"  {w:>10}: {near}")
    return {"grad_error": err, "epoch_loss": result.epoch_loss, "history": result.history}


if __name__ == "__main__":
    main()
