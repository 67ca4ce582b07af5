"""nnU-Net v2 driven from the project: export, plan and preprocess, train folds, predict per fold.

nnU-Net's folders live in the workspace (``W/nnunet/{raw,preprocessed,results}``) and its
environment variables are set here for every call, so a user never exports them. Planning,
preprocessing and training run nnU-Net's own commands in child processes (cancel terminates
the process group; a killed training resumes with ``--c``); prediction
(:mod:`napari_uda.segment.prediction`) runs nnU-Net's predictor fold by fold, initialised from the
network built from the plans and the fold's safetensors weights (nnU-Net's pickled checkpoints are
never opened); here too its coarse-to-fine form (a coarse model finds the region, a fine one
segments inside it).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_uda.core.child import run_child
from napari_uda.core.choices import PLANNERS, SEGMENTER_BUDGETS as BUDGETS
from napari_uda.core.errors import UdaError, safe_name
from napari_uda.core.files import stem_of
from napari_uda.core.io import Volume, read_volume, resample, write_volume
from napari_uda.core.jobs import Progress, StopFlag, emit
from napari_uda.core.modalities import get_modality
from napari_uda.core.organs import nnunet_labels
from napari_uda.core.orientation import read_canonical
from napari_uda.core.roi import Box, crop, foreground_box, paste
from napari_uda.segment.ensemble import fuse_probabilities
from napari_uda.segment.nnunet_model import FOLD_WEIGHTS
from napari_uda.segment.prediction import predict_folds
from napari_uda.segment.prediction_folder import PredictionFolder
from napari_uda.segment.probabilities import ProbabilityFile, save_probabilities

log = logging.getLogger(__name__)
TRAINERS_DIR = Path(__file__).resolve().parent / "nnunet_trainers"


@dataclass(frozen=True)
class NnunetFolders:
    """nnU-Net's three folders inside a workspace."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "nnunet" / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnunet" / "preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnunet" / "results"

    def env(self) -> dict[str, str]:
        """The environment for nnU-Net: its folders, our trainers, one data-augmentation process
        per core at most (``nnUNet_n_proc_DA=0`` on small machines) and no more worker processes
        than cores (``nnUNet_def_n_proc``; nnU-Net's default, 8, spawns 8 interpreters that each
        import torch to export one validation case)."""
        env = dict(os.environ)
        for key, path in (("nnUNet_raw", self.raw), ("nnUNet_preprocessed", self.preprocessed), ("nnUNet_results", self.results)):
            path.mkdir(parents=True, exist_ok=True)
            env[key] = str(path)
        env["nnUNet_extTrainer"] = str(TRAINERS_DIR)
        if "nnUNet_n_proc_DA" not in env and (os.cpu_count() or 1) <= 4:
            env["nnUNet_n_proc_DA"] = "0"
        env.setdefault("nnUNet_def_n_proc", str(worker_processes()))
        return env

    def dataset_dir(self, dataset_id: int) -> Path:
        found = sorted(p for p in self.raw.glob(f"Dataset{dataset_id:03d}_*") if not p.name.endswith(".tmp"))
        if not found:
            raise UdaError(f"{self.raw}: no dataset {dataset_id:03d}; export one first (napari-uda segment export)")
        return found[0]

    def model_dir(self, dataset_id: int, budget: str, planner: str = "resenc-m", configuration: str = "3d_fullres") -> Path:
        name = self.dataset_dir(dataset_id).name
        return self.results / name / f"{BUDGETS[budget]}__{PLANNERS[planner][1]}__{configuration}"


def use_project_trainers() -> None:
    """Resolve the project's trainers by name before nnU-Net searches its own trainer folder.

    nnU-Net finds a trainer by importing every module of its trainer folder in turn; one of
    them (Primus) imports timm and through it torchvision, which cannot load beside a
    CPU-only torch, so the search dies before it reaches ``nnUNet_extTrainer``. Training
    resolves trainers through this one function of nnU-Net (prediction needs no trainer class:
    :func:`napari_uda.segment.nnunet_model.load_fold`).
    """
    import nnunetv2.run.run_training as train_module
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities import find_objects

    from napari_uda.segment.nnunet_trainers import uda_trainers

    original = find_objects.recursive_find_trainer_class_by_name
    if getattr(original, "napari_uda", False):
        return

    def find(trainer_name: str) -> type:
        if trainer_name == nnUNetTrainer.__name__:
            return nnUNetTrainer
        return getattr(uda_trainers, trainer_name, None) or original(trainer_name)

    find.napari_uda = True  # type: ignore[attr-defined]
    for module in (find_objects, train_module):
        module.recursive_find_trainer_class_by_name = find


EXPORTED_BY = "exported by napari-uda"  # dataset.json's description: a dataset folder the project may replace


def _exported_by_us(folder: Path) -> bool:
    try:
        return json.loads((folder / "dataset.json").read_text()).get("description") == EXPORTED_BY
    except (OSError, ValueError, AttributeError):
        return False


def export_dataset(root: str | Path, dataset_id: int, name: str, images: Sequence[Path], labels: Sequence[Path],
                   modality: str, spacing_factor: float = 1.0, case_names: Sequence[str] | None = None,
                   crop_margin_mm: float | None = None) -> Path:
    """Write images and labels as nnU-Net raw data ``DatasetXXX_Name`` with a ``dataset.json``
    (organ table labels, one channel named after ``modality``). Geometry and label values are
    checked per case; errors name the case. ``spacing_factor`` > 1 exports a low-resolution
    copy (spacing multiplied on every axis), the training data of a coarse model;
    ``crop_margin_mm`` crops each case to its organs' region plus that margin
    (:func:`~napari_uda.core.roi.foreground_box`; a case without organs stays whole), the training
    data of a coarse-to-fine pair's fine model. Cases are named after the image files unless
    ``case_names`` names them (needed when two sets share file names, such as real and translated CT)."""
    if len(images) != len(labels):
        raise UdaError(f"{len(images)} images but {len(labels)} label files")
    names = list(case_names) if case_names is not None else [stem_of(p) for p in images]
    if len(names) != len(images):
        raise UdaError(f"{len(images)} images but {len(names)} case names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UdaError(f"two training cases would share the nnU-Net case name {repeated[0]!r}; rename one of them")
    if not 1 <= dataset_id <= 999:
        raise UdaError(f"dataset id must be 1..999, got {dataset_id}")
    safe_name(name, "dataset name")
    for case in names:
        safe_name(case, "case name")
    folders = NnunetFolders(Path(root))
    folders.env()
    target = folders.raw / f"Dataset{dataset_id:03d}_{name}"
    others = [p for p in folders.raw.glob(f"Dataset{dataset_id:03d}_*") if p != target and not p.name.endswith(".tmp")]
    if others:
        raise UdaError(f"dataset id {dataset_id} is already used by {others[0].name}")
    if target.exists() and not _exported_by_us(target):
        raise UdaError(f"{target}: exists and was not written by napari-uda; it is left as it is: choose another "
                       "dataset id or name")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_raw_cases(tmp, images, labels, names, spacing_factor, crop_margin_mm)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta = {"channel_names": {"0": get_modality(modality).key}, "labels": nnunet_labels(),
            "numTraining": len(images), "file_ending": ".nii.gz", "name": name,
            "description": EXPORTED_BY}
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


def _write_raw_cases(folder: Path, images: Sequence[Path], labels: Sequence[Path], names: Sequence[str],
                     spacing_factor: float = 1.0, crop_margin_mm: float | None = None) -> None:
    """imagesTr/<case>_0000.nii.gz and labelsTr/<case>.nii.gz in the canonical orientation, each case
    checked first, cropped to its organs with ``crop_margin_mm`` if given, then resampled by
    ``spacing_factor``."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for img_path, lab_path, case in zip(images, labels, names):
        img, lab = read_canonical(img_path, lab_path)  # nnU-Net sees one anatomical orientation
        if float(img.array.min()) == float(img.array.max()):
            log.warning("%s: the image is constant (%s everywhere); it teaches the segmenter nothing", img_path,
                        img.array.flat[0])
        if not lab.array.any():
            log.warning("%s: no organ is labelled; the case trains the segmenter on background only", lab_path)
        box = foreground_box(lab, img, crop_margin_mm) if crop_margin_mm is not None else None
        if box is not None:
            img, lab = crop(img, box), crop(lab, box)
        if spacing_factor != 1.0:
            coarse = tuple(s * spacing_factor for s in img.spacing)
            img, lab = resample(img, coarse), resample(lab, coarse, labels=True)  # type: ignore[arg-type]
        write_volume(img, folder / "imagesTr" / f"{case}_0000.nii.gz")
        write_volume(Volume(lab.array.astype(np.uint8), lab.geometry), folder / "labelsTr" / f"{case}.nii.gz")


def worker_processes() -> int:
    """How many worker processes an nnU-Net step should spawn here: one per available core, at most 8
    (nnU-Net's default)."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _nnunet_command(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def plan_and_preprocess(root: str | Path, dataset_id: int, planner: str = "resenc-m", configuration: str = "3d_fullres",
                        should_stop: StopFlag | None = None, base_features: int | None = None,
                        max_stages: int | None = None) -> Path:
    """nnU-Net's fingerprinting, planning (Residual Encoder M by default) and preprocessing;
    ``base_features``/``max_stages`` make the planned network smaller (:func:`shrink_plans`)."""
    if planner not in PLANNERS:
        raise UdaError(f"unknown planner {planner!r}; choose one of {', '.join(PLANNERS)}")
    folders = NnunetFolders(Path(root))
    env = folders.env()
    # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0
    env["nnUNet_n_proc_DA"] = str(max(1, int(env.get("nnUNet_n_proc_DA") or 1)))
    folders.dataset_dir(dataset_id)
    cmd = [_nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-pl", PLANNERS[planner][0],
           "-c", configuration, "-np", "1", "-npfp", str(worker_processes()), "--verify_dataset_integrity"]
    run_child(cmd, env, Path(root) / "logs" / f"plan_{dataset_id:03d}.log", should_stop, what=f"nnU-Net planning of dataset {dataset_id}")
    _write_small_splits(folders.preprocessed / folders.dataset_dir(dataset_id).name, folders.dataset_dir(dataset_id))
    if base_features or max_stages:
        plans = folders.preprocessed / folders.dataset_dir(dataset_id).name / f"{PLANNERS[planner][1]}.json"
        shrink_plans(plans, configuration, base_features, max_stages)
    return folders.preprocessed


def shrink_plans(plans_file: Path, configuration: str, base_features: int | None = None,
                 max_stages: int | None = None, max_features: int = 320) -> None:
    """Make the network of ``configuration`` in an nnU-Net plans file smaller, in place: at most
    ``max_stages`` resolution stages (``max_stages - 1`` down-samplings) and ``base_features``
    doubling per stage up to ``max_features`` (the ASIT paper's fast plan: 16 features, 4
    down-samplings). Patch size and preprocessing are unchanged; nnU-Net reads the edited plans."""
    plans = json.loads(plans_file.read_text())
    arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    n = min(arch["n_stages"], max_stages or arch["n_stages"])
    for key in ("kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage"):
        if key in arch:
            arch[key] = arch[key][:n]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][:n - 1]
    arch["n_stages"] = n
    base = base_features or arch["features_per_stage"][0]
    arch["features_per_stage"] = [min(base * 2 ** i, max_features) for i in range(n)]
    plans_file.write_text(json.dumps(plans, indent=2))


def _write_small_splits(preprocessed: Path, raw: Path) -> None:
    """nnU-Net's default split is a 5-fold KFold, which fails with fewer than 5 cases; for 2-4
    cases write ``splits_final.json`` with one fold per case (same seed as nnU-Net's)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    cases = sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    splits = preprocessed / "splits_final.json"
    if 2 <= len(cases) < 5 and not splits.exists():
        splits.write_text(json.dumps(generate_crossval_split(cases, seed=12345, n_splits=len(cases)), indent=2))


def training_events(root: str | Path, dataset_id: int, budget: str) -> Path:
    """``W/logs/train_<id>_<budget>.jsonl``: the progress events (:class:`~napari_uda.core.jobs.Event`)
    of every fold trained for a dataset with a budget; epoch events hold the losses and pseudo Dice."""
    return Path(root) / "logs" / f"train_{dataset_id:03d}_{budget}.jsonl"


@dataclass(frozen=True)
class FoldJob:
    """One fold's nnU-Net training: ``napari_uda.segment.nnunet_train ARGS`` with ``env`` set on top
    of the environment it runs in (this process's, or a cluster worker's: its own GPU, its own
    Python), output to ``log``; progress events go to the file ``env`` names."""

    fold: int
    args: tuple[str, ...]
    env: dict[str, str]
    log: Path

    def run(self, should_stop: StopFlag | None = None, report: Progress | None = None) -> None:
        """Train in a child process (cancel ends its process group; a non-zero exit is an error)."""
        run_child([sys.executable, "-m", "napari_uda.segment.nnunet_train", *self.args], {**os.environ, **self.env},
                  self.log, should_stop, report, Path(self.env["NAPARI_UDA_PROGRESS"]),
                  what=f"nnU-Net training of fold {self.fold}")


def fold_jobs(root: str | Path, dataset_id: int, folds: Sequence[int], budget: str = "tiny", planner: str = "resenc-m",
              configuration: str = "3d_fullres", device: str = "cpu", progress: Progress | None = None,
              init_from: Path | None = None) -> tuple[Path, list[FoldJob]]:
    """The model folder and the training of each of ``folds`` not finished yet (a finished fold has
    its safetensors weights; it is reported as already trained), after checking the plans, the
    weights to fine-tune from and the resume checkpoints."""
    if budget not in BUDGETS:
        raise UdaError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    if budget.endswith("-ft") != (init_from is not None):
        raise UdaError(f"budget {budget!r}: fine-tuning budgets (-ft) need the model to start from, and only they take one")
    folders = NnunetFolders(Path(root))
    plans = folders.preprocessed / folders.dataset_dir(dataset_id).name / f"{PLANNERS[planner][1]}.json"
    if not plans.exists():
        raise UdaError(f"{plans}: missing; plan dataset {dataset_id} first: "
                       f"napari-uda segment plan --workspace {root} --dataset {dataset_id} --planner {planner}")
    env = {k: v for k, v in folders.env().items() if k.startswith("nnUNet_") or os.environ.get(k) != v}  # what training sets
    if init_from is not None:
        for fold in folds:
            if not (Path(init_from) / f"fold_{fold}" / FOLD_WEIGHTS).exists():
                raise UdaError(f"{Path(init_from) / f'fold_{fold}' / FOLD_WEIGHTS}: missing; nothing to fine-tune fold {fold} from")
        env["NAPARI_UDA_INIT_WEIGHTS"] = str(Path(init_from) / "fold_{fold}" / FOLD_WEIGHTS)
    env["NAPARI_UDA_PROGRESS"] = str(training_events(root, dataset_id, budget))
    if device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = device.split(":")[1]
    model, jobs = folders.model_dir(dataset_id, budget, planner, configuration), []
    for fold in folds:
        # finished = safe weights written; nnU-Net's final checkpoint comes first, and a fold stopped
        # between the two is resumed from it, which trains no more and writes the weights
        if (model / f"fold_{fold}" / FOLD_WEIGHTS).exists():
            emit(progress, f"fold {fold}", "already trained")
            continue
        _check_resume_checkpoints(model / f"fold_{fold}")
        args = (str(dataset_id), configuration, str(fold), "-tr", BUDGETS[budget], "-p", PLANNERS[planner][1],
                "-device", device.split(":")[0], "--c")
        jobs.append(FoldJob(fold, args, env, Path(root) / "logs" / f"train_{dataset_id:03d}_fold{fold}.log"))
    return model, jobs


def train_folds(root: str | Path, dataset_id: int, folds: Sequence[int], budget: str = "tiny", planner: str = "resenc-m",
                configuration: str = "3d_fullres", device: str = "cpu", progress: Progress | None = None,
                should_stop: StopFlag | None = None, init_from: Path | None = None) -> Path:
    """Train ``folds`` one after another with nnU-Net's own trainer under ``budget``
    (:func:`fold_jobs`: finished folds are skipped, an interrupted one continues from its latest
    checkpoint; a ``-ft`` budget fine-tunes the same folds of the model folder ``init_from``).
    Returns the model folder."""
    model, jobs = fold_jobs(root, dataset_id, folds, budget, planner, configuration, device, progress, init_from)
    for job in jobs:
        job.run(should_stop, progress)
    return model


def _check_resume_checkpoints(fold_dir: Path) -> None:
    """nnU-Net resumes from ``checkpoint_latest.pth`` (else ``checkpoint_best.pth``), which it writes in
    place: one cut short by a kill makes every rerun fail inside nnU-Net. Check the zip container and
    its CRCs (nothing is unpickled) and name the damaged file and what to do."""
    import zipfile

    for name in ("checkpoint_latest.pth", "checkpoint_best.pth"):
        path = fold_dir / name
        if not path.exists():
            continue
        try:
            with zipfile.ZipFile(path) as z:
                damaged = z.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            damaged = str(exc)
        if damaged is not None:
            fallback = "checkpoint_best.pth" if name == "checkpoint_latest.pth" else "the start of the fold"
            raise UdaError(f"{path}: damaged checkpoint ({damaged}); delete it and run the same command again "
                           f"to continue from {fallback}")


def coarse_regions(coarse_model: str | Path, inputs: Sequence[Path], work: str | Path, coarse_spacing_factor: float,
                   margin_mm: float = 10.0, device: str = "cpu", progress: Progress | None = None,
                   should_stop: StopFlag | None = None, mirroring: bool = False) -> dict[str, Box]:
    """The region of all organs in each input, found by the coarse model (trained on data exported
    with ``coarse_spacing_factor``) on a downsampled copy, plus ``margin_mm``; the whole volume
    where the coarse model finds no foreground."""
    work = Path(work)
    volumes = {stem_of(p): read_volume(p) for p in inputs}
    low_inputs = [write_volume(resample(vol, tuple(s * coarse_spacing_factor for s in vol.spacing)),  # type: ignore[arg-type]
                               work / "coarse_input" / f"{case}.nii.gz") for case, vol in volumes.items()]
    predict_folds(coarse_model, low_inputs, work / "coarse", None, device, False, mirroring, progress, should_stop)
    shutil.rmtree(work / "coarse_input", ignore_errors=True)
    return {case: foreground_box(read_volume(work / "coarse" / f"{case}.nii.gz"), vol, margin_mm)
            or tuple(slice(0, n) for n in vol.shape) for case, vol in volumes.items()}  # type: ignore[misc]


def predict_in_regions(fine_model: str | Path, inputs: Sequence[Path], regions: dict[str, Box], out: str | Path,
                       folds: Sequence[int] | None = None, device: str = "cpu", progress: Progress | None = None,
                       should_stop: StopFlag | None = None, mirroring: bool = False) -> list[dict[str, Any]]:
    """Predict each input only inside its region and paste the result back into the full grid
    (probabilities: background outside the region). Output layout as :func:`predict_folds`; each
    record also holds the region (``roi``: z, y, x start and stop)."""
    out = PredictionFolder(out)
    work = out.root / "_regions"
    pred = PredictionFolder(work / "pred")
    volumes = {stem_of(p): read_volume(p) for p in inputs}
    crops = [write_volume(crop(vol, regions[case]), work / "input" / f"{case}.nii.gz") for case, vol in volumes.items()]
    records = predict_folds(fine_model, crops, pred.root, folds, device, True, mirroring, progress, should_stop)
    used_folds = sorted(int(f) for f in records[0]["folds"])
    for rec in records:
        case, vol, box = rec["case"], volumes[rec["case"]], regions[rec["case"]]
        outside = paste(np.zeros(tuple(b.stop - b.start for b in box), bool), box, vol.shape, fill=True)
        for fold in used_folds:
            with ProbabilityFile(pred.fold_probabilities(fold, case)) as pf:
                part = pf.read_all().astype(np.float16)
            full = paste(part, box, (part.shape[0], *vol.shape), fill=0)
            full[0][outside] = 1  # background outside the region
            save_probabilities(out.fold_probabilities(fold, case), full, vol.geometry)
            part_labels = read_volume(pred.fold_label(fold, case)).array
            write_volume(Volume(paste(part_labels, box, vol.shape), vol.geometry), out.fold_label(fold, case))
        fused = fuse_probabilities([out.fold_probabilities(f, case) for f in used_folds])
        write_volume(Volume(fused, vol.geometry), out.fused(case))
        rec.update(input=str(next(p for p in inputs if stem_of(p) == case)), fused=str(out.fused(case)),
                   roi=[[s.start, s.stop] for s in box])
    out.records.write_text(json.dumps(records, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return records


def coarse_to_fine_predict(coarse_model: str | Path, fine_model: str | Path, inputs: Sequence[Path], out: str | Path,
                           coarse_spacing_factor: float, margin_mm: float = 10.0, folds: Sequence[int] | None = None,
                           device: str = "cpu", progress: Progress | None = None,
                           should_stop: StopFlag | None = None, mirroring: bool = False) -> list[dict[str, Any]]:
    """Coarse-to-fine prediction (FLARE 2025): :func:`coarse_regions` finds where the organs are,
    :func:`predict_in_regions` segments there at full resolution and pastes the result back; both
    models with test-time ``mirroring`` (:mod:`~napari_uda.segment.mirroring`) if asked."""
    regions = coarse_regions(coarse_model, inputs, Path(out) / "_coarse", coarse_spacing_factor, margin_mm, device,
                             progress, should_stop, mirroring)
    return predict_in_regions(fine_model, inputs, regions, out, folds, device, progress, should_stop, mirroring)
