"""Trainers for nnU-Net (see :mod:`napari_uda.segment.nnunet_trainers.uda_trainers`); this folder is ``nnUNet_extTrainer``."""
