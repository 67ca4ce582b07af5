"""Stage 3 of the method: pseudo-labels of the unlabelled target scans from a stage's folds: fold
consistency and case ranking, the filters that keep or drop a case, the voted label and its
uncertainty across self-training rounds.

May import: core, evaluate, segment.
"""
