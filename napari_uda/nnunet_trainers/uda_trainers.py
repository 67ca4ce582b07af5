"""nnU-Net trainers shipped by napari-uda, found by nnU-Net through ``nnUNet_extTrainer``.

Each is nnU-Net's own trainer with a smaller training budget (plain attributes set in
``__init__``, as nnU-Net's variants do), and each reports every finished epoch as one JSON
line to the file named by ``NAPARI_UDA_PROGRESS`` so a widget can show progress.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_UDA_progress(nnUNetTrainer):
    """nnU-Net's full schedule (1000 epochs x 250 iterations), with progress lines."""

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # advances current_epoch
        path = os.environ.get("NAPARI_UDA_PROGRESS")
        if not path or self.local_rank != 0:
            return
        event = {"epoch": self.current_epoch, "num_epochs": self.num_epochs, "fold": self.fold,
                 "train_loss": float(self.logger.get_value("train_losses", step=-1)),
                 "val_loss": float(self.logger.get_value("val_losses", step=-1)),
                 "pseudo_dice": [float(np.round(d, 4)) for d in self.logger.get_value("dice_per_class_or_region", step=-1)]}
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")


class nnUNetTrainer_UDA_small(nnUNetTrainer_UDA_progress):
    """A CPU-demo budget: 10 epochs of 25 iterations with batches of 2 (a few minutes per fold
    on two CPU cores for 32x64x64 patches)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10
        self.num_iterations_per_epoch = 25
        self.num_val_iterations_per_epoch = 5
        self.save_every = 1
        self.configuration_manager.configuration["batch_size"] = 2


class nnUNetTrainer_UDA_tiny(nnUNetTrainer_UDA_progress):
    """A test budget: 2 epochs of 3 iterations with batches of 2."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 1
        self.save_every = 1
        self.configuration_manager.configuration["batch_size"] = 2
