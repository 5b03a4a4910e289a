r"""Input sides as values: which ``center_vecs`` rows a batch reads, and how they form ``h``.

word2vec's two architectures differ only on the input side; the output side is the
:class:`~w2v_jax.objectives.Objective`. An :class:`InputSide` says, for a batch (the dict of
:mod:`w2v_jax.batches` arrays):

* ``ids(batch) -> [B, C]`` int32: the ``center_vecs`` rows each example reads, with
  ``valid(batch) -> [B, C]`` bool marking the real ones;
* ``hidden(rows [B, C, D], batch) -> h [B, D]``: the vector that scores the targets;
* ``grads(dh [B, D], batch) -> [B, C, D]``: the gradient rows of those input rows, given
  :math:`\partial J/\partial h`;
* ``predicted(batch) -> [B]`` int32: the word the objective predicts.

Skip-gram reads one row (C = 1): ``h = v_c`` predicts the outside word ``context``. CBOW reads the
window (C = 2W): ``h`` is the mean (or sum) of the present context rows and predicts ``center``;
its gradient rule is :func:`w2v_jax.gradients.cbow_context_grads`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from w2v_jax import gradients, losses


@dataclasses.dataclass(frozen=True)
class InputSide:
    """One architecture's input side (see the module docstring).

    Attributes:
      name: ``"sg"`` or ``"cbow"`` (logs, configs and the fused kernels' dispatch).
      ids, valid, hidden, grads, predicted: the functions described in the module docstring.
      batch_keys: the batch fields it reads.
      mean: CBOW only: ``h`` is the mean (True, word2vec.c ``cbow_mean``) or the sum.
      rule: CBOW only: ``"word2vec"`` (every slot gets the full ``dh``) or ``"exact"``.
    """

    name: str
    ids: Callable[[dict], jax.Array]
    valid: Callable[[dict], jax.Array]
    hidden: Callable[[jax.Array, dict], jax.Array]
    grads: Callable[[jax.Array, dict], jax.Array]
    predicted: Callable[[dict], jax.Array]
    batch_keys: tuple[str, ...]
    mean: bool = True
    rule: str = "word2vec"


def skip_gram() -> InputSide:
    """Skip-gram: ``h = center_vecs[center]`` predicts ``context`` (P(o | c), CS224N)."""
    return InputSide(
        name="sg",
        ids=lambda batch: batch["center"][:, None],
        valid=lambda batch: jnp.ones(batch["center"].shape + (1,), bool),
        hidden=lambda rows_BxCxD, batch: rows_BxCxD[:, 0],
        grads=lambda dh_BxD, batch: dh_BxD[:, None, :],
        predicted=lambda batch: batch["context"],
        batch_keys=("center", "context", "mask"),
    )


def cbow(mean: bool = True, rule: str = "word2vec") -> InputSide:
    """CBOW: the mean (or sum) of the window's ``center_vecs`` rows predicts ``center``."""
    if rule not in gradients.CBOW_RULES:
        raise ValueError(f"cbow_grad must be one of {gradients.CBOW_RULES}, got {rule!r}")

    def hidden(rows_BxCxD, batch):
        return jax.vmap(losses.cbow_hidden, in_axes=(0, 0, None))(
            rows_BxCxD, batch["context_mask"], mean
        )

    def grads(dh_BxD, batch):
        return jax.vmap(gradients.cbow_context_grads, in_axes=(0, 0, None, None))(
            dh_BxD, batch["context_mask"], mean, rule
        )

    return InputSide(
        name="cbow",
        ids=lambda batch: batch["context"],
        valid=lambda batch: batch["context_mask"] > 0,
        hidden=hidden,
        grads=grads,
        predicted=lambda batch: batch["center"],
        batch_keys=("center", "context", "context_mask", "mask"),
        mean=mean,
        rule=rule,
    )


def from_config(cfg) -> InputSide:
    """The input side a :class:`~w2v_jax.config.Config` names (``--model``, ``--cbow-*``)."""
    if cfg.model.model == "sg":
        return skip_gram()
    if cfg.model.model == "cbow":
        return cbow(cfg.model.cbow_mean, cfg.model.cbow_grad)
    raise ValueError(f"--model must be 'sg' or 'cbow', got {cfg.model.model!r}")
