"""Stage 4 of the method: the review store (SQLite) holding every pseudo-label, its scores and every
reviewer decision.

May import: core.
"""
