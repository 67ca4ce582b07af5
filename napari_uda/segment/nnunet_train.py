"""Entry point of nnU-Net training child processes: nnU-Net's own ``nnUNetv2_train``, with the
project's trainers resolved by name (see :func:`napari_uda.segment.segmenter.use_project_trainers`).

Usage is exactly ``nnUNetv2_train``'s: ``python -m napari_uda.segment.nnunet_train DATASET CONFIG FOLD -tr TRAINER ...``
"""
from __future__ import annotations


def main() -> None:
    from napari_uda.core.child import die_with_group
    from napari_uda.segment.segmenter import use_project_trainers

    die_with_group()
    use_project_trainers()
    from nnunetv2.run.run_training import run_training_entry

    run_training_entry()


if __name__ == "__main__":
    main()
