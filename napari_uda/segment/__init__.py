"""nnU-Net v2 driven from the project: dataset export, planning, fold training in child processes
(with the project's trainers and strong intensity augmentation), prediction per fold without
unpickling, fold ensembles, stored probabilities and post-processing.

May import: core, evaluate.
"""
