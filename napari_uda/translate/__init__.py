"""Stage 1 of the method: CT-to-target image translators (CycleGAN, Organ Attention CycleGAN, Sobel-space ASIT), their
networks and the 2D slice stacks they train on.

May import: core, evaluate, segment.
"""
