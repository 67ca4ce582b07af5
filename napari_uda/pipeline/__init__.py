"""The whole method over a workspace, in order: translate, segment, score, accept, self-train,
post-process and evaluate (workflow); exporting a stage's models as a model folder (export); a table
comparing the stages and rounds (summary).

May import: core, evaluate, segment, translate, pseudo, review, data, cluster.
"""
