"""Lightning callbacks that arm the patch-stats recorder and feed every active tracker."""

from __future__ import annotations

import logging

import lightning as L

from tracking.patch_stats import PatchStatsRecorder

logger = logging.getLogger(__name__)


class PatchStatsCallback(L.Callback):
    """Arms ``recorder`` on the first ``limit`` train and val batches (sanity checks
    excluded) on ``pl_module.model`` and disarms it after each batch, so later batches run
    the plain forward path; with ``every_epochs`` E also on the first training batch of
    every E-th epoch and of the last (the same metric series, step = global batch index).
    Its counts and records travel in the Lightning checkpoint, so a resumed run does not
    instrument its batches again."""

    def __init__(self, recorder: PatchStatsRecorder, every_epochs: int | None = None):
        self.recorder = recorder
        self.every_epochs = every_epochs
        self._val_batches_seen = 0

    def _periodic(self, trainer, batch_idx: int) -> bool:
        """The first batch of every ``every_epochs``-th epoch (1-based) and of the last."""
        if not self.every_epochs or batch_idx != 0:
            return False
        epoch = trainer.current_epoch
        return (epoch + 1) % self.every_epochs == 0 or epoch + 1 == trainer.max_epochs

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.recorder.arm(pl_module.model, "train", trainer.global_step,
                          epoch=trainer.current_epoch, force=self._periodic(trainer, batch_idx))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.recorder.disarm(pl_module.model)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0):
        if not trainer.sanity_checking:
            self.recorder.arm(pl_module.model, "val", self._val_batches_seen)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        if not trainer.sanity_checking:
            self._val_batches_seen += 1
        self.recorder.disarm(pl_module.model)

    # -- resume: the limits count across a restart, they are not re-applied ----------------
    def state_dict(self) -> dict:
        return {"counts": dict(self.recorder.counts), "records": list(self.recorder.records),
                "val_batches_seen": self._val_batches_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.recorder.restore(state_dict["records"], state_dict["counts"])
        self._val_batches_seen = int(state_dict["val_batches_seen"])

    def on_exception(self, trainer, pl_module, exception):
        pl_module.model.patch_stats = None
