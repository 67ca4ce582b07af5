"""The review store: every pseudo-label, its scores and every reviewer decision, in SQLite.

WAL journal, foreign keys on, ``synchronous=FULL``, one short transaction per write, and a
schema version (``PRAGMA user_version``) with ordered migrations. Decisions are append-only:
the state of a case is what its history adds up to, and undo is a new row. An edited label is
written to a temporary file and renamed into place *before* the decision that names it is
committed, so a committed decision always points at an existing file with the recorded hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_uda.core.errors import UdaError, safe_name
from napari_uda.core.files import utc_file_stamp, utc_timestamp
from napari_uda.core.io import Volume, check_same_grid, read_volume, require_organ_labels, write_volume

ACTIONS = ("accept", "reject", "edited", "undo")
STATES = ("not reviewed", "accepted", "rejected", "edited")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE models (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, path TEXT, round INTEGER NOT NULL DEFAULT 0,
        settings TEXT NOT NULL DEFAULT '{}', created TEXT NOT NULL);
    CREATE TABLE cases (
        id TEXT PRIMARY KEY, path TEXT NOT NULL, modality TEXT NOT NULL, content_hash TEXT NOT NULL, added TEXT NOT NULL);
    CREATE TABLE predictions (
        id INTEGER PRIMARY KEY, case_id TEXT NOT NULL REFERENCES cases(id), model_id INTEGER NOT NULL REFERENCES models(id),
        label_path TEXT NOT NULL, label_hash TEXT NOT NULL, case_score REAL, created TEXT NOT NULL,
        UNIQUE (case_id, model_id));
    CREATE TABLE organ_scores (
        prediction_id INTEGER NOT NULL REFERENCES predictions(id), organ INTEGER NOT NULL, consistency REAL NOT NULL,
        PRIMARY KEY (prediction_id, organ));
    CREATE TABLE filter_results (
        prediction_id INTEGER NOT NULL REFERENCES predictions(id), name TEXT NOT NULL, passed INTEGER NOT NULL,
        reason TEXT NOT NULL, PRIMARY KEY (prediction_id, name));
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL REFERENCES cases(id),
        prediction_id INTEGER REFERENCES predictions(id),
        action TEXT NOT NULL CHECK (action IN ('accept', 'reject', 'edited', 'undo')),
        reviewer TEXT NOT NULL CHECK (length(reviewer) > 0), at TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
        label_hash TEXT, label_path TEXT);
    CREATE INDEX decisions_case ON decisions(case_id, id);
    """,
    """
    CREATE TABLE rounds (
        number INTEGER PRIMARY KEY CHECK (number >= 1), settings TEXT NOT NULL, started TEXT NOT NULL,
        model_id INTEGER REFERENCES models(id), finished TEXT);
    CREATE TABLE round_cases (
        round INTEGER NOT NULL REFERENCES rounds(number), case_id TEXT NOT NULL REFERENCES cases(id),
        decision_id INTEGER NOT NULL REFERENCES decisions(id), label_path TEXT NOT NULL, label_hash TEXT,
        PRIMARY KEY (round, case_id));
    CREATE TABLE round_uncertainty (
        round INTEGER NOT NULL REFERENCES rounds(number), case_id TEXT NOT NULL REFERENCES cases(id),
        uncertainty REAL NOT NULL, PRIMARY KEY (round, case_id));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def now() -> str:
    """A decision's time: UTC to the millisecond, so decisions in one second keep their order."""
    return utc_timestamp("milliseconds")


def label_hash(array: np.ndarray) -> str:
    """Content hash of a label map: shape, dtype and voxels (independent of file compression)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file and its folder entry to disk (the rename must survive a crash too)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_hash(path: str | Path) -> str:
    """Hash of a volume file's label content (see :func:`label_hash`)."""
    return label_hash(read_volume(path).array)


@dataclass(frozen=True)
class Decision:
    id: int
    case_id: str
    action: str
    reviewer: str
    at: str
    note: str
    label_hash: str | None
    label_path: str | None
    prediction_id: int | None


@dataclass(frozen=True)
class FilterOutcome:
    """One sample-wise filter's verdict on a pseudo-label."""

    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class QueueRow:
    """A case in the review queue: its image, latest pseudo-label (None before any prediction) with
    the case score, per-organ consistency (organ index -> score) and filter outcomes, and its review
    state (``reviewer``/``at`` of the standing decision; ``decided_on_latest``: that decision was
    about the latest pseudo-label)."""

    case: str
    modality: str
    image: str
    label: str | None
    case_score: float | None
    organ_consistency: dict[int, float] | None
    filters: tuple[FilterOutcome, ...] | None
    state: str
    reviewer: str | None
    at: str | None
    decided_on_latest: bool

    @property
    def failed(self) -> list[str]:
        """``"<filter>: <reason>"`` of every filter the pseudo-label failed."""
        return [f"{f.name}: {f.reason}" for f in self.filters or () if not f.passed]


@dataclass(frozen=True)
class RoundRow:
    """A self-training round as the store records it: settings, model, the cases it trained on and
    each case's uncertainty across rounds."""

    round: int
    settings: dict[str, Any]
    started: str
    finished: str | None
    model_id: int | None
    cases: list[str]
    uncertainty: dict[str, float]


def current_state(history: Iterable[Decision]) -> tuple[str, Decision | None]:
    """State of a case from its decision history: each undo withdraws the latest standing decision."""
    standing: list[Decision] = []
    for d in history:
        if d.action == "undo":
            if standing:
                standing.pop()
        else:
            standing.append(d)
    if not standing:
        return "not reviewed", None
    last = standing[-1]
    return {"accept": "accepted", "reject": "rejected", "edited": "edited"}[last.action], last


DB_NAME = "review.sqlite"


class ReviewStore:
    """One workspace's review database (``W/review.sqlite``, see :meth:`for_workspace`)."""

    @classmethod
    def for_workspace(cls, workspace: str | Path) -> ReviewStore:
        """The store of a workspace: only inside a workspace (never a database created in any folder),
        and an empty database file is an error, never a fresh store as if nothing had been decided."""
        from napari_uda.core.workspace import MANIFEST

        workspace = Path(workspace)
        if not (workspace / MANIFEST).is_file():
            raise UdaError(f"{workspace}: not a napari-uda workspace (no {MANIFEST}); create one with `napari-uda pipeline` "
                           "or the Workspace widget")
        db = workspace / DB_NAME
        if db.exists() and db.stat().st_size == 0:
            raise UdaError(f"{db}: the review database is an empty file (truncated or replaced?); restore it from a "
                           "backup, or delete it to start the review over")
        return cls(db)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UdaError(f"{self.path}: not a usable review database ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): one writer at a time, nothing half-done."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UdaError(f"{self.path}: schema version {version} is newer than this napari-uda ({SCHEMA_VERSION})")
            for v in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    # --- what was predicted ---------------------------------------------------------------
    def add_model(self, name: str, path: str | Path | None = None, round: int = 0, settings: Mapping[str, Any] | None = None) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
            if row:
                return int(row[0])
            cur = db.execute("INSERT INTO models (name, path, round, settings, created) VALUES (?, ?, ?, ?, ?)",
                             (name, str(path) if path else None, round, json.dumps(dict(settings or {})), now()))
            return int(cur.lastrowid)

    def add_case(self, case_id: str, path: str | Path, modality: str) -> None:
        content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        with self.transaction() as db:
            db.execute("INSERT INTO cases (id, path, modality, content_hash, added) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET path = excluded.path, modality = excluded.modality, "
                       "content_hash = excluded.content_hash", (case_id, str(path), modality, content, now()))

    def add_prediction(self, case_id: str, model_id: int, label_path: str | Path, organ_consistency: Mapping[int, float],
                       case_score: float, filters: Iterable[Any] = ()) -> int:
        """Record a model's pseudo-label for a case with its per-organ consistency and filter outcomes
        (objects with ``name``, ``passed``, ``reason``, e.g. :class:`napari_uda.pseudo.filters.FilterResult`)."""
        digest = file_hash(label_path)
        with self.transaction() as db:
            cur = db.execute("INSERT INTO predictions (case_id, model_id, label_path, label_hash, case_score, created) "
                             "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(case_id, model_id) DO UPDATE SET "
                             "label_path = excluded.label_path, label_hash = excluded.label_hash, "
                             "case_score = excluded.case_score RETURNING id",
                             (case_id, model_id, str(label_path), digest, float(case_score), now()))
            pid = int(cur.fetchone()[0])
            db.execute("DELETE FROM organ_scores WHERE prediction_id = ?", (pid,))
            db.executemany("INSERT INTO organ_scores VALUES (?, ?, ?)",
                           [(pid, int(k), float(v)) for k, v in organ_consistency.items()])
            db.execute("DELETE FROM filter_results WHERE prediction_id = ?", (pid,))
            db.executemany("INSERT INTO filter_results VALUES (?, ?, ?, ?)",
                           [(pid, f.name, int(bool(f.passed)), f.reason) for f in filters])
            return pid

    def add_replacement(self, case_id: str, model_id: int, label_path: str | Path, outcome: Any,
                        previous: QueueRow | None) -> int:
        """Record a new pseudo-label for a case that keeps the per-organ consistency, case score and
        filter outcomes of its previous one (``previous``, the case's queue row; None: none, score 0)
        and adds ``outcome`` (the reason it replaced it), in place of an outcome of that name already
        there (a label transferred again replaces the earlier transfer's reason)."""
        if previous is None:
            return self.add_prediction(case_id, model_id, label_path, {}, 0.0, [outcome])
        kept = [f for f in previous.filters or () if f.name != outcome.name]
        return self.add_prediction(case_id, model_id, label_path, previous.organ_consistency or {},
                                   previous.case_score or 0.0, [*kept, outcome])

    def training_pairs(self, decided: Sequence[tuple[str, str]]) -> tuple[list[Path], list[Path]]:
        """(images, labels) to train on from reviewed cases given as (case id, label path), such as
        :meth:`accepted` or a self-training round's :meth:`round_cases`."""
        paths = dict(self.db.execute("SELECT id, path FROM cases").fetchall())
        return [Path(paths[case]) for case, _ in decided], [Path(label) for _, label in decided]

    def model_cases(self, model_id: int) -> set[str]:
        """The cases ``model_id`` has a pseudo-label of."""
        return {c for (c,) in self.db.execute("SELECT case_id FROM predictions WHERE model_id = ?", (model_id,))}

    def case_scores(self, model_id: int | None) -> list[float]:
        """The case scores of ``model_id``'s pseudo-labels (empty for an unknown or missing model)."""
        rows = self.db.execute("SELECT case_score FROM predictions WHERE model_id = ? ORDER BY case_id", (model_id,))
        return [float(s) for (s,) in rows]

    def mean_organ_consistency(self, model_id: int | None) -> dict[int, float]:
        """Each organ's fold consistency averaged over ``model_id``'s pseudo-labels."""
        return dict(self.db.execute(
            "SELECT o.organ, AVG(o.consistency) FROM organ_scores o JOIN predictions p ON p.id = o.prediction_id "
            "WHERE p.model_id = ? GROUP BY o.organ", (model_id,)).fetchall())

    # --- decisions ---------------------------------------------------------------------------
    def history(self, case_id: str) -> list[Decision]:
        rows = self.db.execute("SELECT id, case_id, action, reviewer, at, note, label_hash, label_path, prediction_id "
                               "FROM decisions WHERE case_id = ? ORDER BY id", (case_id,)).fetchall()
        return [Decision(*r) for r in rows]

    def state(self, case_id: str) -> tuple[str, Decision | None]:
        return current_state(self.history(case_id))

    def _latest_prediction_row(self, case_id: str) -> tuple[int, str, str] | None:
        return self.db.execute("SELECT p.id, p.label_path, p.label_hash FROM predictions p JOIN models m ON m.id = p.model_id "
                               "WHERE p.case_id = ? ORDER BY m.round DESC, p.id DESC LIMIT 1", (case_id,)).fetchone()

    def latest_prediction(self, case_id: str) -> tuple[int, str, str]:
        """(prediction id, label path, label hash) of the case's prediction from the latest round."""
        row = self._latest_prediction_row(case_id)
        if row is None:
            raise UdaError(f"case {case_id!r} has no prediction to decide on")
        return int(row[0]), row[1], row[2]

    def decide(self, case_id: str, action: str, reviewer: str, note: str = "", edited_label: Volume | None = None,
               edited_dir: str | Path | None = None, label_name: str = "the edited label") -> Decision:
        """Record ``accept``, ``reject`` or ``undo`` for a case, or ``edited`` with the reviewer's label.

        The edited label (called ``label_name`` in errors) is checked like every label (integer organ
        values, the grid of the case's image), then written (temporary file, then rename) into
        ``edited_dir`` before the decision is committed; the decision stores its content hash and
        absolute path.
        """
        if action not in ACTIONS:
            raise UdaError(f"unknown decision {action!r}; choose one of {', '.join(ACTIONS)}")
        if not reviewer.strip():
            raise UdaError("a decision needs a reviewer name")
        if self.db.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is None:
            raise UdaError(f"unknown case {case_id!r}")
        pred_id, label_path, digest = (None, None, None)
        if action in ("accept", "edited"):
            pred_id, label_path, digest = self.latest_prediction(case_id)
        elif action == "reject":  # a rejection names the prediction it rejects, when there is one
            row = self._latest_prediction_row(case_id)
            pred_id = int(row[0]) if row else None
        if action == "edited":
            if edited_label is None:
                raise UdaError("an edited decision needs the edited label")
            require_organ_labels(edited_label, label_name)
            image_path = self.db.execute("SELECT path FROM cases WHERE id = ?", (case_id,)).fetchone()[0]
            check_same_grid(read_volume(image_path), edited_label, image_path, label_name)
            folder = (Path(edited_dir) if edited_dir else self.path.parent / "edited_labels").resolve()
            stamp = utc_file_stamp()
            who = re.sub(r"[^A-Za-z0-9_.-]", "_", reviewer.strip()).lstrip(".")[:50] or "reviewer"  # only for the file name
            target = folder / f"{safe_name(case_id, 'case id')}__{who}__{stamp}.nii.gz"
            write_volume(edited_label, target)  # temporary name, then rename: complete before the commit below
            _fsync(target)
            label_path, digest = str(target), label_hash(edited_label.array)
        with self.transaction() as db:
            cur = db.execute("INSERT INTO decisions (case_id, prediction_id, action, reviewer, at, note, label_hash, label_path) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (case_id, pred_id, action, reviewer.strip(), now(), note, digest, label_path))
            did = int(cur.lastrowid)
        row = self.db.execute("SELECT id, case_id, action, reviewer, at, note, label_hash, label_path, prediction_id "
                              "FROM decisions WHERE id = ?", (did,)).fetchone()
        return Decision(*row)

    # --- queue ---------------------------------------------------------------------------------
    def queue(self, modality: str | None = None) -> list[QueueRow]:
        """Cases (of ``modality``) ranked by their latest prediction's case score, best first."""
        rows = self.db.execute("SELECT c.id, c.modality, c.path FROM cases c WHERE (? IS NULL OR c.modality = ?)",
                               (modality, modality)).fetchall()
        out = []
        for case_id, mod, path in rows:
            try:
                pid, label_path, _ = self.latest_prediction(case_id)
            except UdaError:
                pid, label_path = None, None
            score = organ = filters = None
            if pid is not None:
                score = self.db.execute("SELECT case_score FROM predictions WHERE id = ?", (pid,)).fetchone()[0]
                organ = {int(o): c for o, c in self.db.execute(
                    "SELECT organ, consistency FROM organ_scores WHERE prediction_id = ? ORDER BY organ", (pid,))}
                filters = tuple(FilterOutcome(n, bool(p), r) for n, p, r in self.db.execute(
                    "SELECT name, passed, reason FROM filter_results WHERE prediction_id = ? ORDER BY name", (pid,)))
            state, last = self.state(case_id)
            out.append(QueueRow(case_id, mod, path, label_path, score, organ, filters, state,
                                last.reviewer if last else None, last.at if last else None,
                                bool(last and pid is not None and last.prediction_id == pid)))
        return sorted(out, key=lambda r: (-(r.case_score if r.case_score is not None else -1.0), r.case))

    def accepted(self) -> list[tuple[str, str]]:
        """(case id, label path) of every case whose current state is accepted or edited."""
        return [(d.case_id, d.label_path) for d in self._accepted_decisions()]  # type: ignore[misc]

    def _accepted_decisions(self) -> list[Decision]:
        out = []
        for (case_id,) in self.db.execute("SELECT id FROM cases ORDER BY id").fetchall():
            state, last = self.state(case_id)
            if state in ("accepted", "edited") and last is not None and last.label_path:
                out.append(last)
        return out

    # --- self-training rounds ---------------------------------------------------------------------
    def start_round(self, number: int, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Record round ``number`` with its settings and the accepted cases it trains on (a snapshot:
        later decisions do not change what the round used). Returns (case id, label path) pairs."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM rounds WHERE number = ?", (number,)).fetchone():
                raise UdaError(f"self-training round {number} is already recorded")
            db.execute("INSERT INTO rounds (number, settings, started) VALUES (?, ?, ?)",
                       (number, json.dumps(dict(settings)), now()))
            used = self._accepted_decisions()
            db.executemany("INSERT INTO round_cases VALUES (?, ?, ?, ?, ?)",
                           [(number, d.case_id, d.id, d.label_path, d.label_hash) for d in used])
        return [(d.case_id, d.label_path) for d in used]  # type: ignore[misc]

    def round_cases(self, number: int) -> list[tuple[str, str]]:
        return [(c, p) for c, p in self.db.execute(
            "SELECT case_id, label_path FROM round_cases WHERE round = ? ORDER BY case_id", (number,))]

    def finish_round(self, number: int, model_id: int, uncertainty: Mapping[str, float]) -> None:
        """The round's model and each case's uncertainty across rounds (see :func:`napari_uda.pseudo.labels.round_uncertainty`)."""
        with self.transaction() as db:
            db.execute("UPDATE rounds SET model_id = ?, finished = ? WHERE number = ?", (model_id, now(), number))
            db.executemany("INSERT INTO round_uncertainty VALUES (?, ?, ?) ON CONFLICT(round, case_id) "
                           "DO UPDATE SET uncertainty = excluded.uncertainty",
                           [(number, c, float(u)) for c, u in uncertainty.items()])

    def rounds(self) -> list[RoundRow]:
        """Every self-training round, in order."""
        out = []
        for number, settings, started, model_id, finished in self.db.execute(
                "SELECT number, settings, started, model_id, finished FROM rounds ORDER BY number").fetchall():
            uncertainty = dict(self.db.execute(
                "SELECT case_id, uncertainty FROM round_uncertainty WHERE round = ?", (number,)).fetchall())
            out.append(RoundRow(number, json.loads(settings), started, finished, model_id,
                                [c for c, _ in self.round_cases(number)], uncertainty))
        return out

    def state_counts(self) -> dict[str, int]:
        """How many cases are in each review state (review progress)."""
        counts = dict.fromkeys(STATES, 0)
        for (case_id,) in self.db.execute("SELECT id FROM cases").fetchall():
            counts[self.state(case_id)[0]] += 1
        return counts

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
