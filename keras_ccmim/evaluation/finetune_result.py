"""What a fine-tuning run returns (`FinetuneResult`) and its one-line summary."""

import dataclasses

import keras


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns: accuracies in percent, what was run, the model.

    Attributes:
        top1, top5, num_eval: the final classifier on the evaluation split.
        epochs, steps, learning_rate: the run's length and peak lr.
        final_loss: mean training loss of the last epoch (of its steps run
            in the last call, for an epoch a resume finished).
        best_epoch: the epoch (1-based) of the best evaluation top-1 (the
            first of equals), `best_top1` and `best_top5` its accuracies;
            None when no epoch was recorded.
        history: per-epoch lists `epoch` (1-based), `loss`, `val_top1`,
            `val_top5`, over the whole run (earlier calls included).
        global_step, initial_step: steps done in all, and where this call
            started (0 for a fresh run).
        output_dir: the run's folder (None: not checkpointed, nothing
            written); `paths` maps output names to files in it.
        model: the fine-tuned `ViTClassifier`.
    """

    top1: float
    top5: float
    num_eval: int
    epochs: int
    steps: int
    learning_rate: float
    final_loss: float
    best_epoch: int
    best_top1: float
    best_top5: float
    history: dict
    global_step: int
    initial_step: int
    model: keras.Model = dataclasses.field(repr=False)
    output_dir: str = None
    paths: dict = None

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "model"}


def finetune_summary(result):
    """One line: the final and the best epoch's accuracies, where the
    classifier went."""
    best = "n/a"
    if result.best_epoch is not None:
        best = (f"{result.best_top1:.2f} (top-5 {result.best_top5:.2f}) at epoch "
                f"{result.best_epoch} of {result.epochs}")
    saved = ""
    if result.paths:
        saved = f" Classifier saved to {result.paths['classifier']}."
    return (
        f"Fine-tuned for {result.global_step} steps: final top-1 {result.top1:.2f} (top-5 "
        f"{result.top5:.2f}) on {result.num_eval} images; best top-1 {best}.{saved}"
    )

