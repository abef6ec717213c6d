"""ccMIM losses: masked-patch reconstruction and the [CLS] contrastive terms.

All functions take and return backend tensors through `keras.ops` and compute
in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from keras import ops

from keras_ccmim.type_aliases import Tensor

ContrastiveLoss = Literal["infonce", "infonce_cross", "align", "none"]
CONTRASTIVE_LOSSES = get_args(ContrastiveLoss)
# `backend_specific.cross_replica_gather()`: `(gather, replica_id)`.
CrossReplica = tuple[Callable[[Tensor], Tensor], Tensor]


def normalize_patches(patches: Tensor, epsilon: float = 1e-6) -> Tensor:
    """Per-patch `(t - mean) / sqrt(var + eps)`, var unbiased (MAE's norm_pix).

    Args:
        patches: `[B, N, P]`.
    """
    patches = ops.cast(patches, "float32")
    count = ops.shape(patches)[-1]
    mean = ops.mean(patches, axis=-1, keepdims=True)
    var = ops.sum(ops.square(patches - mean), axis=-1, keepdims=True) / (count - 1)
    return (patches - mean) / ops.sqrt(var + epsilon)


def reconstruction_loss(
    target: Tensor, pred: Tensor, mask: Tensor, norm_pix_loss: bool = True
) -> Tensor:
    """Mean squared error per patch, averaged over masked patches only.

    Args:
        target: `[B, N, P]`, `patchify(images)`.
        pred: `[B, N, P]`, decoder output.
        mask: `[B, N]`, 1 for masked patches, 0 for visible ones.
        norm_pix_loss: normalise each target patch first.

    Returns:
        scalar float32.
    """
    target = normalize_patches(target) if norm_pix_loss else ops.cast(target, "float32")
    per_patch = ops.mean(ops.square(ops.cast(pred, "float32") - target), axis=-1)
    mask = ops.cast(mask, "float32")
    return ops.sum(per_patch * mask) / ops.maximum(ops.sum(mask), 1.0)


def l2_normalize(x: Tensor, epsilon: float = 1e-12) -> Tensor:
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


def _global_rows(u, t, cross_replica):
    """`(u_all, t_all, positive)`: the embeddings of the global batch and,
    for each local row, the one-hot `[B, B_all]` of its own column. Without
    `cross_replica` (one program over the whole batch) they are `u`, `t`
    and the identity."""
    batch = ops.shape(u)[0]
    if cross_replica is None:
        return u, t, ops.eye(batch, dtype="float32")
    gather, replica_id = cross_replica
    u_all, t_all = gather(u), gather(t)
    columns = ops.cast(replica_id, "int32") * batch + ops.arange(batch, dtype="int32")
    return u_all, t_all, ops.one_hot(columns, ops.shape(u_all)[0], dtype="float32")


def infonce_loss(
    student: Tensor,
    teacher: Tensor,
    temperature: float,
    cross_replica: CrossReplica | None = None,
) -> Tensor:
    """Paper eq. 7, with in-batch negatives from both views.

    `l_i = -log( e^{u_i.t_i/tau} /
                 (sum_{j != i} e^{u_i.u_j/tau} + sum_j e^{u_i.t_j/tau}) )`,
    `u = normalize(student)`, `t = stop_gradient(normalize(teacher))`.

    Args:
        student: `[B, E]` projected visible-set [CLS].
        teacher: `[B, E]` projected masked-set [CLS].
        temperature: `tau`.
        cross_replica: optional `(gather, replica_id)` of
            `backend_specific.cross_replica_gather()`: the `j` run over the
            global batch gathered from every replica (the gradient flows
            through the gathered student embeddings back to their replica),
            the `i` over this replica's rows.

    Returns:
        scalar float32, the mean of `l_i` (over this replica's rows).
    """
    u = l2_normalize(student)
    t = ops.stop_gradient(l2_normalize(teacher))
    u_all, t_all, eye = _global_rows(u, t, cross_replica)
    logits_ut = ops.matmul(u, ops.transpose(t_all)) / temperature
    logits_uu = ops.matmul(u, ops.transpose(u_all)) / temperature
    logits_uu = logits_uu - eye * 1e9  # exclude j == i
    positives = ops.sum(logits_ut * eye, axis=-1)
    denominator = ops.logsumexp(ops.concatenate([logits_uu, logits_ut], axis=-1), axis=-1)
    return ops.mean(denominator - positives)


def infonce_cross_loss(
    student: Tensor,
    teacher: Tensor,
    temperature: float,
    cross_replica: CrossReplica | None = None,
) -> Tensor:
    """The public code's variant: cross-entropy over `u_i.t_j/tau` with the
    target `j = i`, times `2*tau` (`j` over the global batch with
    `cross_replica`, as `infonce_loss`).
    """
    u = l2_normalize(student)
    t = ops.stop_gradient(l2_normalize(teacher))
    _, t_all, eye = _global_rows(u, t, cross_replica)
    logits = ops.matmul(u, ops.transpose(t_all)) / temperature
    positives = ops.sum(logits * eye, axis=-1)
    return 2.0 * temperature * ops.mean(ops.logsumexp(logits, axis=-1) - positives)


def align_loss(prediction: Tensor, teacher: Tensor) -> Tensor:
    """Paper eq. 8: `1 - cos(stop_gradient(teacher_i), prediction_i)`, mean."""
    p = l2_normalize(prediction)
    z = ops.stop_gradient(l2_normalize(teacher))
    return ops.mean(1.0 - ops.sum(p * z, axis=-1))


def contrastive_loss(
    kind: ContrastiveLoss,
    student: Tensor,
    teacher: Tensor,
    temperature: float,
    cross_replica: CrossReplica | None = None,
) -> Tensor:
    """Dispatch by name; `student` is the predictor output for `align`
    (which has no negatives, so `cross_replica` does not change it)."""
    if kind == "infonce":
        return infonce_loss(student, teacher, temperature, cross_replica)
    if kind == "infonce_cross":
        return infonce_cross_loss(student, teacher, temperature, cross_replica)
    if kind == "align":
        return align_loss(student, teacher)
    if kind == "none":
        return ops.zeros((), dtype="float32")
    raise ValueError(
        f"Unknown contrastive loss {kind!r}; choose one of {', '.join(CONTRASTIVE_LOSSES)}."
    )
