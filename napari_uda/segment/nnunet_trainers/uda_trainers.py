"""nnU-Net trainers shipped by napari-uda, found by nnU-Net through ``nnUNet_extTrainer``.

Each is nnU-Net's own trainer with a smaller training budget (plain attributes set in
``__init__``, as nnU-Net's variants do), and each reports every training iteration and every
finished epoch as a :class:`~napari_uda.core.jobs.Event` JSON line to the file named by
``NAPARI_UDA_PROGRESS`` (task ``fold K``, counting the fold's iterations over all epochs; an
epoch's line also has its losses and pseudo Dice) so the command line and the widgets show it. The
``_aug`` variants add the strong intensity augmentation of a source-only baseline
(:mod:`~napari_uda.segment.nnunet_trainers.augment`: a random contrast per organ, a random remap of all
intensities); the ``_mirror`` variants of the CPU budgets restore nnU-Net's mirroring augmentation
(for test-time mirroring); the ``_ft`` variants fine-tune the previous stage's weights of the same fold instead
of training from scratch.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from napari_uda.core.device import TORCH_THREADS, autocast_forward, cpu_autocast_dtype
from napari_uda.core.jobs import Event
from napari_uda.segment.nnunet_model import save_fold_model, unwrap
from napari_uda.segment.nnunet_trainers.augment import IntensityRemapTransform, OrganContrastTransform


class nnUNetTrainer_UDA_progress(nnUNetTrainer):
    """nnU-Net's full schedule (1000 epochs x 250 iterations), with progress lines; a finished
    fold also writes its weights as safetensors + sidecar (:mod:`napari_uda.segment.nnunet_model`), which
    is what napari-uda predicts from (nnU-Net's pickled checkpoints are never opened)."""

    def initialize(self) -> None:
        """nnU-Net's set-up, then :meth:`load_initial_weights`; on a CPU, torch's threads are
        ``NAPARI_UDA_TORCH_THREADS`` where set (nnU-Net takes every core); with native bfloat16 the
        network then also runs under bf16 autocast (nnU-Net autocasts on CUDA only) and, for 2d,
        channels-last: 1.6x faster steps here."""
        super().initialize()
        self.load_initial_weights()
        if self.device.type == "cpu" and os.environ.get(TORCH_THREADS):  # a Dask worker's share of the cores
            torch.set_num_threads(int(os.environ[TORCH_THREADS]))
        dtype = cpu_autocast_dtype() if self.device.type == "cpu" else None
        if dtype is None:
            return
        self.network.forward = autocast_forward(self.network.forward, "cpu", dtype)
        if len(self.configuration_manager.patch_size) == 2:
            self.network.to(memory_format=torch.channels_last)
        self.print_to_log_file(f"CPU autocast to {dtype}")

    def load_initial_weights(self) -> None:
        """Nothing: the network starts from nnU-Net's initialisation (the ``_ft`` trainers load
        weights here, before the network is made channels-last, which safetensors cannot load into)."""

    def on_train_end(self) -> None:
        super().on_train_end()
        if self.local_rank != 0:
            return
        save_fold_model(unwrap(self.network), self.output_folder, self.__class__.__name__, self.configuration_name, self.fold,
                        self.inference_allowed_mirroring_axes, {"epochs": self.current_epoch})

    def _report(self, message: str = "", **data: object) -> None:
        """One event line to ``NAPARI_UDA_PROGRESS`` (rank 0 only): the fold's iterations done of all."""
        path = os.environ.get("NAPARI_UDA_PROGRESS")
        if path and self.local_rank == 0:
            per_epoch = self.num_iterations_per_epoch
            done = min(self.current_epoch, self.num_epochs) * per_epoch + self._iteration
            event = Event(f"fold {self.fold}", message, done, self.num_epochs * per_epoch, "iterations", data)
            with open(path, "a") as f:
                f.write(event.to_json() + "\n")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._iteration = 0

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step, then an event: an epoch of a real-size scan can take minutes."""
        result = super().train_step(batch)
        self._iteration += 1
        if self._iteration < self.num_iterations_per_epoch:  # the epoch's last one is reported with its losses
            self._report(f"epoch {self.current_epoch + 1}/{self.num_epochs}")
        return result

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # advances current_epoch
        train_loss = float(self.logger.get_value("train_losses", step=-1))
        val_loss = float(self.logger.get_value("val_losses", step=-1))
        self._iteration = 0
        self._report(f"epoch {self.current_epoch}/{self.num_epochs} train_loss={train_loss:.3f} val_loss={val_loss:.3f}",
                     fold=self.fold, epoch=self.current_epoch, num_epochs=self.num_epochs, train_loss=train_loss, val_loss=val_loss,
                     pseudo_dice=[float(np.round(d, 4)) for d in self.logger.get_value("dice_per_class_or_region", step=-1)])


class nnUNetTrainer_UDA_small(nnUNetTrainer_UDA_progress):
    """The CPU budget: 40 epochs of 40 iterations, batches of 8, AdamW at 3e-3 with nnU-Net's
    poly decay, no mirroring (a flip turns a right kidney into a left one: learnable from context
    with nnU-Net's 1000 epochs, a distraction at 1600 iterations). Measured on phantom T2WI with
    the ``2d`` configuration and 16 base features: 4 to 11 minutes per fold on two CPU cores,
    depending on the machine and the augmentation, 7 with the bf16 autocast of :meth:`initialize`
    (``benchmarks/RESULTS.md``); for the same slices seen, batches of 8 beat 16 (twice the
    updates, +0.07 held-out DSC); nnU-Net's SGD at 1e-2 learned nothing in the same budget."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 40
        self.num_iterations_per_epoch = 40
        self.num_val_iterations_per_epoch = 5
        self.initial_lr = 3e-3
        self.save_every = 1
        self.configuration_manager.configuration["batch_size"] = 8

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, PolyLRScheduler]:
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self) -> tuple:
        rotation, dummy_2d, patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch_size, None


class nnUNetTrainer_UDA_tiny(nnUNetTrainer_UDA_small):
    """A test budget: 2 epochs of 3 iterations with batches of 2, and no final validation."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 1
        self.configuration_manager.configuration["batch_size"] = 2

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Skipped: after six iterations a validation Dice means nothing, and exporting it (a pool of
        processes) took 5.6 s of a fold's 20 here; the other budgets validate as nnU-Net does."""
        self.print_to_log_file("final validation skipped (the tiny budget is a test budget)")


def _with_intensity_augmentation(transforms: ComposeTransforms) -> ComposeTransforms:
    """nnU-Net's training transforms with a random contrast per organ, then the random intensity
    remap, right after the spatial ones."""
    transforms.transforms[1:1] = [OrganContrastTransform(), IntensityRemapTransform()]
    return transforms


class nnUNetTrainer_UDA_progress_aug(nnUNetTrainer_UDA_progress):
    """The full schedule with strong intensity augmentation (source-only baseline)."""

    @staticmethod
    def get_training_transforms(*args, **kwargs) -> ComposeTransforms:
        return _with_intensity_augmentation(nnUNetTrainer.get_training_transforms(*args, **kwargs))


class nnUNetTrainer_UDA_small_aug(nnUNetTrainer_UDA_small):
    """The CPU budget with strong intensity augmentation (source-only baseline)."""

    @staticmethod
    def get_training_transforms(*args, **kwargs) -> ComposeTransforms:
        return _with_intensity_augmentation(nnUNetTrainer.get_training_transforms(*args, **kwargs))


class nnUNetTrainer_UDA_tiny_aug(nnUNetTrainer_UDA_tiny):
    """The test budget with strong intensity augmentation (source-only baseline)."""

    @staticmethod
    def get_training_transforms(*args, **kwargs) -> ComposeTransforms:
        return _with_intensity_augmentation(nnUNetTrainer.get_training_transforms(*args, **kwargs))


class _Mirrored:
    """Mixin of the ``_mirror`` trainers: nnU-Net's own mirroring augmentation back (every axis of a
    patch flipped with p = 0.5, labels with it, so a flipped right kidney keeps its label: learnable
    from the liver's side) and the mirror axes it allows at inference, for test-time mirroring."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self) -> tuple:
        return nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(self)


class nnUNetTrainer_UDA_small_mirror(_Mirrored, nnUNetTrainer_UDA_small):
    """The CPU budget with mirroring augmentation."""


class nnUNetTrainer_UDA_tiny_mirror(_Mirrored, nnUNetTrainer_UDA_tiny):
    """The test budget with mirroring augmentation."""


class nnUNetTrainer_UDA_small_aug_mirror(_Mirrored, nnUNetTrainer_UDA_small_aug):
    """The CPU budget with strong intensity and mirroring augmentation."""


class nnUNetTrainer_UDA_tiny_aug_mirror(_Mirrored, nnUNetTrainer_UDA_tiny_aug):
    """The test budget with strong intensity and mirroring augmentation."""


class _FineTuned:
    """Mixin of the ``_ft`` trainers: the network starts from the safetensors weights named by
    ``NAPARI_UDA_INIT_WEIGHTS`` (a path with ``{fold}``: the previous stage's same fold) and trains
    half the epochs at a tenth of the learning rate. FLARE 2025 fine-tunes each self-training round
    from the last (SGD at 1e-6 over nnU-Net's 1000 epochs); this is the same idea scaled to AdamW
    and the project's budgets. Resuming an interrupted fold loads its own checkpoint over it."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr /= 10
        self.num_epochs = max(1, self.num_epochs // 2)

    def load_initial_weights(self) -> None:
        from safetensors.torch import load_model

        template = os.environ.get("NAPARI_UDA_INIT_WEIGHTS")
        if not template:
            raise RuntimeError("a fine-tuning trainer needs NAPARI_UDA_INIT_WEIGHTS: the weights to start from")
        load_model(unwrap(self.network), template.format(fold=self.fold), strict=True, device=str(self.device))


class nnUNetTrainer_UDA_progress_ft(_FineTuned, nnUNetTrainer_UDA_progress):
    """The full schedule, fine-tuning."""


class nnUNetTrainer_UDA_small_ft(_FineTuned, nnUNetTrainer_UDA_small):
    """The CPU budget, fine-tuning."""


class nnUNetTrainer_UDA_tiny_ft(_FineTuned, nnUNetTrainer_UDA_tiny):
    """The test budget, fine-tuning."""


class nnUNetTrainer_UDA_progress_aug_ft(_FineTuned, nnUNetTrainer_UDA_progress_aug):
    """The full schedule with strong intensity augmentation, fine-tuning."""


class nnUNetTrainer_UDA_small_aug_ft(_FineTuned, nnUNetTrainer_UDA_small_aug):
    """The CPU budget with strong intensity augmentation, fine-tuning."""


class nnUNetTrainer_UDA_tiny_aug_ft(_FineTuned, nnUNetTrainer_UDA_tiny_aug):
    """The test budget with strong intensity augmentation, fine-tuning."""


class nnUNetTrainer_UDA_small_mirror_ft(_FineTuned, nnUNetTrainer_UDA_small_mirror):
    """The CPU budget with mirroring augmentation, fine-tuning."""


class nnUNetTrainer_UDA_tiny_mirror_ft(_FineTuned, nnUNetTrainer_UDA_tiny_mirror):
    """The test budget with mirroring augmentation, fine-tuning."""


class nnUNetTrainer_UDA_small_aug_mirror_ft(_FineTuned, nnUNetTrainer_UDA_small_aug_mirror):
    """The CPU budget with strong intensity and mirroring augmentation, fine-tuning."""


class nnUNetTrainer_UDA_tiny_aug_mirror_ft(_FineTuned, nnUNetTrainer_UDA_tiny_aug_mirror):
    """The test budget with strong intensity and mirroring augmentation, fine-tuning."""
