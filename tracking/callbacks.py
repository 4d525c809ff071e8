"""Lightning callbacks that arm the patch-stats recorder and feed every active tracker."""

from __future__ import annotations

import logging

import lightning as L

from tracking.patch_stats import PatchStatsRecorder

logger = logging.getLogger(__name__)


class PatchStatsCallback(L.Callback):
    """Arms ``recorder`` on the first ``limit`` train and val batches (sanity checks
    excluded) by attaching it to ``pl_module.model.patch_stats``; detaches it after each
    batch, so later batches run the plain forward path. Its counts and records travel in the
    Lightning checkpoint, so a resumed run does not instrument its batches again."""

    def __init__(self, recorder: PatchStatsRecorder):
        self.recorder = recorder
        self._val_batches_seen = 0

    def _arm(self, pl_module, stage_name: str, step: int) -> None:
        if self.recorder.wants(stage_name):
            self.recorder.begin(stage_name, step)
            pl_module.model.patch_stats = self.recorder

    def _disarm(self, pl_module) -> None:
        if pl_module.model.patch_stats is not None:
            pl_module.model.patch_stats = None
            self.recorder.end()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._arm(pl_module, "train", trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._disarm(pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0):
        if not trainer.sanity_checking:
            self._arm(pl_module, "val", self._val_batches_seen)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        if not trainer.sanity_checking:
            self._val_batches_seen += 1
        self._disarm(pl_module)

    # -- resume: the limits count across a restart, they are not re-applied ----------------
    def state_dict(self) -> dict:
        return {"counts": dict(self.recorder.counts), "records": list(self.recorder.records),
                "val_batches_seen": self._val_batches_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.recorder.restore(state_dict["records"], state_dict["counts"])
        self._val_batches_seen = int(state_dict["val_batches_seen"])

    def on_exception(self, trainer, pl_module, exception):
        pl_module.model.patch_stats = None
