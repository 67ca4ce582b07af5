"""The adaptation pipeline over a workspace: translate, segment, score, accept, self-train, predict.

Each step is a function of a :class:`~napari_uda.core.workspace.Workspace` that skips what the
manifest says is finished and resumes what was interrupted (translator checkpoints, nnU-Net's
``--c``), so rerunning a command continues where it stopped. Stage names (also the folders
under ``W/predictions/``): ``no_adaptation`` (the strong source-only baseline: nnU-Net on real
CT normalised as the targets are, with strong intensity augmentation), ``cyclegan``,
``organ_attention``, ``asit`` (Sobel space: its segmenter reads the targets' Sobel maps, as do the
rounds of an ASIT pipeline), ``tanq`` (target-aware normalisation), ``pooled`` (multi-view pooling:
one segmenter on several translators' translations), ``self_training_r1`` (r2, ...) and ``final``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_uda.cluster.engine import run_tasks
from napari_uda.core.choices import (
    ACCEPT_RULES,
    BASE_STAGES,
    COARSE_SPACING_FACTOR,
    CROP_MARGIN_MM,
    DISENTANGLED_VARIANTS,
    PLANNERS,
    POOLED,
    SOBEL_SPACE_VARIANTS,
    Budget,
    get_budget,
    pipeline_budget,
)
from napari_uda.core.errors import UdaError
from napari_uda.core.files import stem_of, styled_stem
from napari_uda.core.io import Volume, read_volume, write_volume
from napari_uda.core.jobs import EventLog, Progress, StopFlag, check_stop, emit, tee, within
from napari_uda.core.modalities import SOURCE, get_modality
from napari_uda.core.organs import ORGAN_INDICES, PET_SCORED
from napari_uda.core.records import ModelRecord, PipelineRecord, RoundRecord, StageRecord, TranslatorRecord
from napari_uda.core.workspace import Workspace
from napari_uda.pipeline.transfer import TRANSFERRED, TransferFrom, transfer_from_workspace
from napari_uda.pseudo.consistency import fold_consistency_details
from napari_uda.pseudo.filters import (
    DEFAULT_AGREEMENT,
    FilterResult,
    SourceStats,
    filter_checkpoint_agreement,
    filter_organs_present,
    filter_relative_volume,
    mean_dice,
)
from napari_uda.pseudo.labels import round_uncertainty, select_by_uncertainty, strict_majority_label
from napari_uda.review.store import ReviewStore
from napari_uda.segment.ensemble import union_ensemble
from napari_uda.segment.postprocess import postprocess
from napari_uda.segment.prediction_folder import PredictionFolder

if TYPE_CHECKING:  # torch is imported only when a translator trains
    from napari_uda.translate.translator import TranslatorConfig


DATASET_IDS = {"no_adaptation": 101, "cyclegan": 102, "organ_attention": 103, "asit": 104, "tanq": 105,
               POOLED: 106, "dar": 107, "oracle": 109}  # self_training_rN: 110 + N; a coarse model: 400 + its stage's
COARSE = "_coarse"  # coarse-to-fine: the manifest name of a stage's coarse model is <stage>_coarse




@dataclass(frozen=True)
class FilterSettings:
    """How pseudo-labels are scored and, if asked, accepted automatically; the JSON of these
    settings is the reviewer name of automatic acceptance.

    ``rule``: ``filters`` (FLARE 2025: the top ``top_k`` by case score among those that pass
    every filter), ``consistency`` (FLARE 2024: the top ``top_k`` by fold consistency alone) or
    ``uncertainty`` (ASIT: the ``top_k`` with the lowest uncertainty across the rounds so far, each
    with the union of its rounds' predictions as pseudo-label, :func:`record_union_labels`; before
    round 2 there is no uncertainty yet, so round 1 is chosen by fold consistency).
    ``top_k`` None: the better half of the scored cases (rounded up).
    """

    top_k: int | None = None
    agreement: float | None = None  # checkpoint-agreement threshold; None: 0.9 MRI, 0.82 PET
    sigma: float = 3.0
    rule: str = "filters"

    def __post_init__(self) -> None:
        if self.rule not in ACCEPT_RULES:
            raise UdaError(f"unknown acceptance rule {self.rule!r}; choose one of {', '.join(ACCEPT_RULES)}")
        if self.top_k is not None and self.top_k < 1:
            raise UdaError("top_k must be at least 1")

    def limit(self, n_cases: int) -> int:
        """How many of ``n_cases`` scored cases may be accepted."""
        return self.top_k if self.top_k is not None else (n_cases + 1) // 2

    def agreement_for(self, modality: str) -> float:
        return self.agreement if self.agreement is not None else DEFAULT_AGREEMENT[get_modality(modality).kind]

    def reviewer(self) -> str:
        return "auto:" + json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)


def stage_for_round(r: int) -> str:
    return f"self_training_r{r}"


def dataset_id(stage: str) -> int:
    """The nnU-Net dataset id of a stage's model (or of its coarse model, ``<stage>_coarse``)."""
    if stage.endswith(COARSE):
        return 400 + dataset_id(stage.removesuffix(COARSE))
    if stage in DATASET_IDS:
        return DATASET_IDS[stage]
    if stage.startswith("self_training_r"):
        return 110 + int(stage.rsplit("r", 1)[1])
    raise UdaError(f"unknown stage {stage!r}")


def stage_order(stages: Sequence[str]) -> list[str]:
    """Stages in the order of the method: no_adaptation, cyclegan, organ_attention, rounds, final."""
    fixed = ["no_adaptation", *BASE_STAGES.values(), POOLED]

    def key(s: str) -> tuple[int, int]:
        if s in fixed:
            return (0, fixed.index(s))
        if s.startswith("self_training_r"):
            return (1, int(s.rsplit("r", 1)[1]))
        return (2, 0)

    return sorted(stages, key=key)


def _check_stop(should_stop: StopFlag | None) -> None:
    check_stop(should_stop, "pipeline", "run the same command again to continue")


# --- 1. translate ------------------------------------------------------------------------------------
def budget_translator_config(budget: Budget, modality: str, variant: str) -> TranslatorConfig:
    """The translator ``budget`` trains for ``modality``: its iterations, crop size and network sizes,
    a checkpoint every 5% of training and a preview every 10%."""
    from napari_uda.translate.translator import TranslatorConfig

    return TranslatorConfig(modality=modality, variant=variant, size=budget.translator_size,
                            iterations=budget.translator_iterations, ngf=budget.ngf, ndf=budget.ndf,
                            n_blocks=budget.blocks, checkpoint_every=max(10, budget.translator_iterations // 20),
                            preview_every=max(10, budget.translator_iterations // 10))


def translate_stage(ws: Workspace, variant: str, budget: Budget, device: str | None = None,
                    progress: Progress | None = None, should_stop: StopFlag | None = None) -> Path:
    """Train (or resume) the ``variant`` translator and translate every source CT into
    ``W/translated/<variant>/`` (attention maps beside it in ``<variant>_attention/``)."""
    from napari_uda.translate.training import train_translator

    stage = BASE_STAGES[variant]
    out = ws.translated_dir(variant)
    if ws.translator(variant) and out.exists():
        return out
    cfg = budget_translator_config(budget, ws.modality, variant)
    folder = ws.translator_dir(variant)
    log = EventLog(ws.root / "logs" / f"translator_{variant}.jsonl")
    train_translator(cfg, ws.files("source_images"), ws.files("source_labels"), ws.files("target_images"), folder,
                     device=device, progress=tee(log, within(progress, stage)), should_stop=should_stop)
    _check_stop(should_stop)
    translate_sources(ws, variant, device, progress, should_stop)
    ws.record(variant, TranslatorRecord(str(folder), cfg.iterations, str(out), cfg.size, asdict(cfg)))
    return out


def translate_sources(ws: Workspace, variant: str, device: str | None = None, progress: Progress | None = None,
                      should_stop: StopFlag | None = None) -> Path:
    """Translate every source CT with the workspace's trained ``variant`` translator into
    ``W/translated/<variant>/`` (attention maps in ``<variant>_attention/``); a target-aware
    translator (TANQ) translates each CT by the regions of its organ labels, a DAR translator once
    per target style cluster (``<case>_s<k>``)."""
    from napari_uda.translate.translator import load_translator, translate_styles, translate_volume

    out, stage = ws.translated_dir(variant), BASE_STAGES.get(variant, variant)
    tr = load_translator(ws.translator_dir(variant), device=device)
    sources, labels = ws.files("source_images"), ws.files("source_labels")
    for i, (path, label, targets) in enumerate(zip(sources, labels, translated_paths(ws, variant))):
        _check_stop(should_stop)
        ct, case = read_volume(path, SOURCE.key), stem_of(path)
        if tr.config.disentangled:
            for target, styled in zip(targets, translate_styles(tr, ct, case, should_stop=should_stop)):
                write_volume(styled, target)
        else:
            regions = read_volume(label) if tr.config.target_aware else None
            translated, attention = translate_volume(tr, ct, should_stop=should_stop, labels=regions)
            write_volume(translated, targets[0])
            if attention is not None:
                write_volume(attention, out.with_name(out.name + "_attention") / f"{case}.nii.gz")
        emit(progress, stage, f"translated {case}", i + 1, len(sources), "volumes")
    return out


def translated_paths(ws: Workspace, variant: str) -> list[list[Path]]:
    """Where the ``variant`` translations of each source CT go, in the order of the source CT:
    ``<case>.nii.gz``, or for DAR one ``<case>_s<k>.nii.gz`` per style cluster of the workspace's
    trained translator (its sidecar is read once)."""
    folder, cases = ws.translated_dir(variant), [stem_of(p) for p in ws.files("source_images")]
    if variant not in DISENTANGLED_VARIANTS:
        return [[folder / f"{case}.nii.gz"] for case in cases]
    sidecar = ws.translator_dir(variant) / "translator.json"
    try:
        n = len(json.loads(sidecar.read_text())["training"]["style_clusters"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UdaError(f"{sidecar}: no trained dar translator with style clusters; train it first") from None
    return [[folder / f"{styled_stem(case, k)}.nii.gz" for k in range(n)] for case in cases]


# --- 2. segment: export, plan, train folds, predict every target scan ----------------------------------
def train_stage_model(ws: Workspace, stage: str, images: Sequence[Path], labels: Sequence[Path], channel: str,
                      budget: Budget, device: str = "cpu", round_number: int = 0, progress: Progress | None = None,
                      should_stop: StopFlag | None = None, augment: bool = False,
                      names: Sequence[str] | None = None, init_from: Path | None = None, client: Any = None) -> Path:
    """Export ``images``/``labels`` (channel named ``channel``) as the stage's nnU-Net dataset, plan,
    train the budget's folds (resuming; in parallel on ``client``'s Dask cluster if given) and record
    the model; returns the model folder.
    ``augment``: the budget's trainer with strong intensity augmentation (source-only baseline);
    ``names``: nnU-Net case names when image file names repeat (real and translated CT);
    ``init_from``: fine-tune this model folder's folds instead of training from scratch.
    Coarse-to-fine (:func:`crop_margin_of`): a stage's fine model trains on organ-region crops,
    its coarse model (``stage`` ``<stage>_coarse``) on whole volumes at ``COARSE_SPACING_FACTOR``
    times the budget's spacing."""
    from napari_uda.cluster.train import train_folds_on
    from napari_uda.segment.segmenter import NnunetFolders, export_dataset, plan_and_preprocess

    recorded = ws.model(stage)
    if recorded:
        return Path(recorded.path)
    did, folders = dataset_id(stage), NnunetFolders(ws.root)
    coarse = stage.endswith(COARSE)
    margin = None if coarse else crop_margin_of(ws)
    plans = folders.preprocessed / f"Dataset{did:03d}_UDA_{stage}" / f"{PLANNERS[budget.planner][1]}.json"
    if not plans.exists():
        emit(progress, stage, f"exporting {len(images)} case(s) as nnU-Net dataset {did}"
             + (f", cropped to the organs + {margin:g} mm" if margin is not None else "")
             + (f", at {COARSE_SPACING_FACTOR:g}x the spacing" if coarse else ""))
        export_dataset(ws.root, did, f"UDA_{stage}", images, labels, channel,
                       budget.spacing_factor * (COARSE_SPACING_FACTOR if coarse else 1.0), names, margin)
        _check_stop(should_stop)
        emit(progress, stage, "planning and preprocessing")
        plan_and_preprocess(ws.root, did, budget.planner, budget.configuration, should_stop, budget.base_features,
                            budget.max_stages)

    trainer = budget.segmenter_budget(augment, tta_of(ws), init_from is not None)
    model = train_folds_on(client, ws.root, did, budget.folds, trainer, budget.planner, budget.configuration, device,
                           within(progress, stage), should_stop, init_from)
    ws.record(stage, ModelRecord(str(model), did, trainer, budget.planner, budget.configuration, list(budget.folds),
                                 round_number, len(images), channel, str(init_from) if init_from else None,
                                 crop_margin_mm=margin))
    return model


def train_segmenter(ws: Workspace, variant: str | None, budget: Budget, device: str = "cpu",
                    progress: Progress | None = None, should_stop: StopFlag | None = None, client: Any = None) -> str:
    """Train the stage model of one training source on its own: the source CT translated by the
    workspace's trained ``variant`` translator (translating what is missing first), or the raw CT
    when ``variant`` is None (``no_adaptation``); the folds in parallel on ``client``'s cluster if
    given. Returns the stage."""
    ct, labels = ws.files("source_images"), ws.files("source_labels")
    if variant is None:
        stage, images, channel, names = "no_adaptation", ct, SOURCE.key, None
    else:
        if not (ws.translator_dir(variant) / "translator.json").exists():
            raise UdaError(f"no trained {variant} translator in this workspace: train one in the Translator widget "
                           f"or with `napari-uda translate train --out {ws.translator_dir(variant)}`")
        images, labels, names = source_training_set(ws, [variant], real_ct=False)
        if not all(p.exists() for p in images):
            translate_sources(ws, variant, device, progress, should_stop)
        stage, channel = BASE_STAGES[variant], ws.modality
    train_stage(ws, stage, images, labels, channel, budget, device, 0, progress, should_stop, names=names, client=client)
    return stage


def train_stage(ws: Workspace, stage: str, images: Sequence[Path], labels: Sequence[Path], channel: str,
                budget: Budget, device: str = "cpu", round_number: int = 0, progress: Progress | None = None,
                should_stop: StopFlag | None = None, augment: bool = False, names: Sequence[str] | None = None,
                finetune_from: str | None = None, client: Any = None) -> Path:
    """Train the stage's model (:func:`train_stage_model`; fine-tuning the stage ``finetune_from``'s
    where it was trained the same way) and, if that model trained on organ crops (coarse-to-fine),
    the stage's coarse model ``<stage>_coarse``; returns the stage's model folder."""
    model = train_stage_model(ws, stage, images, labels, channel, budget, device, round_number, progress, should_stop,
                              augment, names, _finetuned(ws, finetune_from, stage), client)
    if ws.model(stage).crop_margin_mm is not None:
        train_stage_model(ws, stage + COARSE, images, labels, channel, budget, device, round_number, progress,
                          should_stop, augment, names, _finetuned(ws, finetune_from, stage + COARSE), client)
    return model


def predict_as_stage(ws: Workspace, stage: str, inputs: Sequence[Path], out: str | Path, device: str = "cpu",
                     progress: Progress | None = None, should_stop: StopFlag | None = None,
                     client: Any = None) -> list[dict[str, Any]]:
    """Predict ``inputs`` (as the stage's segmenter reads them, :func:`stage_inputs`) into ``out``
    the way the stage predicts: with every fold of its model, test-time mirroring if the workspace
    asks for it, and for a model trained on organ crops coarse-to-fine (its coarse model finds the
    region with the crops' margin; serially, also with a ``client``). Returns the prediction records."""
    from napari_uda.cluster.predict import predict_folds_on
    from napari_uda.segment.segmenter import coarse_to_fine_predict

    model, tta = ws.model(stage), tta_of(ws)
    if model.crop_margin_mm is None:
        return predict_folds_on(client, model.path, inputs, out, model.folds, device, mirroring=tta, progress=progress,
                                should_stop=should_stop)
    coarse = ws.model(stage + COARSE)
    if coarse is None:
        raise UdaError(f"{ws.root}: the {stage} model trained on organ crops but its coarse model is missing; run the "
                       "same command again to train it")
    factor = get_budget(pipeline_budget(model.budget)).spacing_factor * COARSE_SPACING_FACTOR
    return coarse_to_fine_predict(coarse.path, model.path, inputs, out, factor, model.crop_margin_mm, model.folds,
                                  device, progress, should_stop, tta)


def segment_stage(ws: Workspace, stage: str, images: Sequence[Path], labels: Sequence[Path], channel: str,
                  budget: Budget, device: str = "cpu", round_number: int = 0, progress: Progress | None = None,
                  should_stop: StopFlag | None = None, augment: bool = False,
                  names: Sequence[str] | None = None, finetune_from: str | None = None, client: Any = None) -> Path:
    """Train the stage's models (:func:`train_stage`) and predict every target scan into
    ``W/predictions/<stage>/`` (:func:`predict_as_stage`; on ``client``'s Dask cluster if given);
    returns that folder. Finished steps are skipped."""
    out = ws.predictions_dir(stage)
    if ws.stage(stage):
        return out
    model = train_stage(ws, stage, images, labels, channel, budget, device, round_number, progress, should_stop,
                        augment, names, finetune_from, client)
    targets, record, tta = stage_inputs(ws, stage), ws.model(stage), tta_of(ws)
    coarse = ws.model(stage + COARSE) if record.crop_margin_mm is not None else None
    emit(progress, stage, f"predicting {len(targets)} target scan(s) with {len(record.folds)} folds"
         + (", test-time mirroring" if tta else "") + (", coarse-to-fine" if coarse else ""))
    records = predict_as_stage(ws, stage, targets, out, device, within(progress, stage), should_stop, client)
    ws.record(stage, StageRecord("predicted", str(out), str(model), round_number, len(records), tta=tta,
                                 coarse_model=coarse.path if coarse else None))
    return out


def _finetuned(ws: Workspace, previous: str | None, name: str) -> Path | None:
    """The model a stage's model ``name`` (its fine or its coarse one) fine-tunes: the same kind of
    model of the stage ``previous``, if that was trained the same way (coarse, or on crops of the
    same margin); else None, training from scratch."""
    if previous is None:
        return None
    coarse = name.endswith(COARSE)
    rec = ws.model(previous + COARSE if coarse else previous)
    if rec is None or (not coarse and rec.crop_margin_mm != crop_margin_of(ws)):
        return None
    return Path(rec.path)


def crop_margin_of(ws: Workspace) -> float | None:
    """Coarse-to-fine (FLARE 2025) for the stages trained from now on: the margin (mm) around the
    organs of the fine model's crops; None: off (one model on whole volumes)."""
    pipeline = ws.pipeline()
    return pipeline.crop_margin_mm if pipeline else None


def tta_of(ws: Workspace) -> bool:
    """Whether the workspace's stages train with mirroring augmentation and predict with test-time
    mirroring (the pipeline's ``tta``, :func:`run_pipeline`, :func:`self_train`)."""
    pipeline = ws.pipeline()
    return bool(pipeline and pipeline.tta)


def sobel_space(ws: Workspace, stage: str) -> bool:
    """Whether ``stage``'s segmenter reads Sobel-space images: ASIT's stage, and the self-training
    rounds of a pipeline whose translator is ASIT."""
    if stage in DATASET_IDS:
        return stage in {BASE_STAGES[v] for v in SOBEL_SPACE_VARIANTS}
    pipeline = ws.pipeline()
    return pipeline is not None and pipeline.variant in SOBEL_SPACE_VARIANTS


def _sobel_spacing(ws: Workspace) -> float:
    """The working pixel size (mm) of the workspace's ASIT translator: where Sobel maps are taken."""
    from napari_uda.translate.translator import load_translator

    return load_translator(ws.translator_dir(SOBEL_SPACE_VARIANTS[0]), "cpu").config.spacing_mm


def stage_volume(ws: Workspace, stage: str, volume: Volume, spacing: float | None = None) -> Volume:
    """A target scan as ``stage``'s segmenter reads it: itself, or for a Sobel-space stage its
    Sobel map at the working pixel size of the workspace's ASIT translator (``spacing``, if known)."""
    from napari_uda.translate.translator import sobel_volume

    if not sobel_space(ws, stage):
        return volume
    return sobel_volume(volume, ws.modality, spacing or _sobel_spacing(ws))


def stage_inputs(ws: Workspace, stage: str, paths: Sequence[Path] | None = None) -> list[Path]:
    """The images ``stage``'s segmenter reads for the target scans ``paths`` (default: all of
    them): the scans, or for a Sobel-space stage their Sobel maps ``W/sobel/<case>.nii.gz``
    (:func:`stage_volume`, written once)."""
    paths = ws.files("target_images") if paths is None else list(paths)
    if not sobel_space(ws, stage):
        return paths
    maps = [ws.sobel_dir / f"{stem_of(p)}.nii.gz" for p in paths]
    missing = [(p, out) for p, out in zip(paths, maps) if not out.exists()]
    spacing = _sobel_spacing(ws) if missing else None
    for path, out in missing:
        write_volume(stage_volume(ws, stage, read_volume(path, ws.modality), spacing), out)
    return maps


def source_training_set(ws: Workspace, variants: Sequence[str], real_ct: bool) -> tuple[list[Path], list[Path], list[str]]:
    """The labelled source half of a segmenter's training data: every source CT translated by each
    of ``variants`` (DAR: in each style cluster's style, ``<case>_s<k>``; several variants: TANQ's
    multi-view pooling, cases named ``<stage>_<case>``), plus (``real_ct``, FLARE 2025's RCT+FI)
    the real CT itself as ``real_<case>``; a Sobel-space translator's segmenter trains on its
    translations alone (real CT is not in its space). Returns (images, labels, nnU-Net case names)."""
    ct, ct_labels = ws.files("source_images"), list(ws.files("source_labels"))
    images, labels, names = [], [], []
    for v in variants:
        for label, translations in zip(ct_labels, translated_paths(ws, v)):
            images += translations
            labels += [label] * len(translations)
            names += [stem_of(t) if len(variants) == 1 else f"{BASE_STAGES[v]}_{stem_of(t)}" for t in translations]
    if real_ct and not set(variants) & set(SOBEL_SPACE_VARIANTS):
        return images + list(ct), labels + ct_labels, names + [f"real_{stem_of(p)}" for p in ct]
    return images, labels, names


# --- 3. score: fold consistency and the dual-stage filters, into the review store -----------------------
def source_stats(ws: Workspace) -> SourceStats:
    """Relative organ volumes of the source CT labels (filter b), computed once and kept in the workspace."""
    path = ws.reports_dir / "source_stats.json"
    if path.exists():
        return SourceStats.load(path)
    stats = SourceStats.from_labels(read_volume(p).array for p in ws.files("source_labels"))
    path.parent.mkdir(parents=True, exist_ok=True)
    stats.save(path)
    return stats


def _best_two_folds(model: Path, folds: Sequence[int]) -> list[int]:
    """The two folds with the best validation Dice (nnU-Net's ``fold_k/validation/summary.json``)."""
    def val_dice(f: int) -> float:
        summary = model / f"fold_{f}" / "validation" / "summary.json"
        if not summary.exists():
            return float("-inf")
        return float(json.loads(summary.read_text())["foreground_mean"]["Dice"])

    return sorted(folds, key=lambda f: (-val_dice(f), f))[:2]


def score_case(out: str, path: str, folds: list[int], best: list[int], expected: Sequence[int], stats: SourceStats,
               sigma: float) -> dict[str, Any]:
    """One target case of a stage (a task of its own on a cluster): its fold consistency, the
    pseudo-label (FLARE 2025's pixel-wise strict majority over the folds, disagreement as
    background, written to ``<out>/pseudo/<case>.nii.gz``), the organs-present and relative-volume
    filters on it, and the Dice of the two best folds (for the checkpoint-agreement filter)."""
    pred, case = PredictionFolder(out), stem_of(path)
    fold_vols = [read_volume(pred.fold_label(f, case)) for f in folds]
    fold_labels = [v.array for v in fold_vols]
    voted = strict_majority_label(fold_labels)
    pseudo = write_volume(Volume(voted, fold_vols[0].geometry), pred.pseudo_label(case))
    return {"case": case, "path": path, "label": str(pseudo),
            "consistency": fold_consistency_details(fold_labels, expected),
            "filters": [filter_organs_present(voted, expected), filter_relative_volume(voted, stats, sigma, expected)],
            "agreement": mean_dice(fold_labels[folds.index(best[0])], fold_labels[folds.index(best[1])], expected)}


def score_stage(ws: Workspace, stage: str, store: ReviewStore, settings: FilterSettings = FilterSettings(),
                progress: Progress | None = None, should_stop: StopFlag | None = None,
                client: Any = None) -> list[dict[str, Any]]:
    """Score every target case of ``stage`` (:func:`score_case`, on ``client``'s cluster if given),
    the checkpoint-agreement filter across cases, and record the model and every pseudo-label in
    the review store (written here only: one writer). Returns one row per case."""
    info, model_info = ws.stage(stage), ws.model(stage)
    if info is None or model_info is None:
        raise UdaError(f"stage {stage} has no predictions to score yet")
    model, folds = Path(model_info.path), list(model_info.folds)
    expected = PET_SCORED if get_modality(ws.modality).kind == "pet" else ORGAN_INDICES
    model_id = store.add_model(f"{ws.root.name}:{stage}", model, model_info.round,
                               {"stage": stage, "budget": model_info.budget, "folds": folds,
                                "dataset": model_info.dataset, "filters": asdict(settings)})
    targets, best, stats = ws.files("target_images"), _best_two_folds(model, folds), source_stats(ws)
    rows = run_tasks(client, score_case, [(info.predictions, str(p), folds, best, expected, stats, settings.sigma)
                                          for p in targets], [stem_of(p) for p in targets], f"{stage} scoring",
                     progress, should_stop)
    checks = filter_checkpoint_agreement({r["case"]: r["agreement"] for r in rows},
                                         settings.agreement_for(ws.modality), settings.limit(len(rows)))
    for row in rows:
        row["filters"].insert(2, checks[row["case"]])
        store.add_case(row["case"], row["path"], ws.modality)
        store.add_prediction(row["case"], model_id, row["label"], row["consistency"].scored,
                             row["consistency"].case_score, row["filters"])
    emit(progress, stage, f"scored {len(rows)} case(s)", len(rows), len(rows), "cases")
    ws.record(stage, replace(info, status="done", scored=len(rows), model_id=model_id))
    return [{"case": r["case"], "case_score": r["consistency"].case_score,
             "passed": all(f.passed for f in r["filters"])} for r in rows]


def import_model(ws: Workspace, folder: str | Path, device: str | None = None, progress: Progress | None = None,
                 should_stop: StopFlag | None = None) -> str:
    """Make an exported model folder (:mod:`napari_uda.core.model_folder`) this workspace's base stage,
    without training: its translator is copied to ``W/translators/<variant>/`` and translates every
    source CT, its nnU-Net folds are copied to ``W/models/<stage>/`` and recorded as the model of the
    translator's stage. Returns that stage; predicting, scoring, review and self-training go on from it."""
    import shutil

    from napari_uda.core.model_folder import SEGMENTER, TRANSLATOR, TRANSLATOR_FILES, read_sidecar

    folder = Path(folder)
    meta = read_sidecar(folder)
    if meta is None:
        raise UdaError(f"{folder}: not an exported model folder (no model.json)")
    if get_modality(meta["modality"]).key != ws.modality:
        raise UdaError(f"{folder / 'model.json'}: a model for {meta['modality']}, this workspace adapts to {ws.modality}")
    variant = (meta.get("translator") or {}).get("variant")
    if variant not in BASE_STAGES:
        raise UdaError(f"{folder / 'model.json'}: the model has no translator the pipeline can continue from")
    stage = BASE_STAGES[variant]
    if ws.model(stage):
        return stage
    ws.translator_dir(variant).mkdir(parents=True, exist_ok=True)
    for name in TRANSLATOR_FILES:
        shutil.copy2(folder / TRANSLATOR / name, ws.translator_dir(variant) / name)
    translate_sources(ws, variant, device, progress, should_stop)
    ws.record(variant, TranslatorRecord(str(ws.translator_dir(variant)), meta["translator"]["iterations"],
                                        str(ws.translated_dir(variant)), meta["translator"]["size"],
                                        imported_from=str(folder)))
    model = ws.root / "models" / stage
    shutil.rmtree(model, ignore_errors=True)  # a copy interrupted before it was recorded
    shutil.copytree(folder / SEGMENTER, model, ignore=shutil.ignore_patterns("*.pth", "*.pkl", "*.pt"))
    seg = meta["segmenter"]
    ws.record(stage, ModelRecord(str(model), dataset_id(stage), seg["budget"], seg["planner"], seg["configuration"],
                                 list(seg["folds"]), 0, meta["training_data"]["segmenter_cases"], meta["channel"],
                                 imported_from=str(folder), imported_stage=meta["model_stage"]))
    if ws.pipeline() is None:  # a fine-tuned (-ft) or augmented (-aug) stage's pipeline budget
        ws.set_pipeline(PipelineRecord(variant, pipeline_budget(seg["budget"]), stage, rounds=0,
                                       real_ct=meta["training_data"].get("real_ct", True), intensity_aug=True,
                                       tta="-mirror" in seg["budget"]))
    emit(progress, stage, f"imported {meta['model_stage']} model from {folder}")
    return stage


def predict_with_model(ws: Workspace, folder: str | Path, device: str = "cpu",
                       settings: FilterSettings = FilterSettings(), progress: Progress | None = None,
                       should_stop: StopFlag | None = None) -> str:
    """An exported model on this workspace's target scans, without training: import it
    (:func:`import_model`), predict every target scan, score them into the review queue and write
    the post-processed ``final`` predictions. Returns the model's stage; finished steps are skipped."""
    stage = import_model(ws, folder, device, progress, should_stop)
    segment_stage(ws, stage, [], [], ws.modality, get_budget(ws.pipeline().budget), device, 0, progress, should_stop)
    if not ws.stage_done(stage):
        with ReviewStore.for_workspace(ws.root) as store:
            score_stage(ws, stage, store, settings, progress, should_stop)
    write_final(ws, stage, progress, should_stop)
    return stage


def pseudo_label(ws: Workspace, variant: str, budget: Budget, device: str = "cpu",
                 settings: FilterSettings = FilterSettings(), progress: Progress | None = None,
                 should_stop: StopFlag | None = None, client: Any = None) -> list[dict[str, Any]]:
    """Stage 3 with the ``variant`` translator's trained model: every fold predicts every target
    scan, and the cases are scored into the review queue (both as tasks on ``client``'s cluster if
    given). Self-training then starts from here."""
    stage = BASE_STAGES[variant]
    if ws.model(stage) is None:
        raise UdaError(f"no trained {stage} model in this workspace: train its folds first")
    if ws.pipeline() is None:
        ws.set_pipeline(PipelineRecord(variant, budget.name, stage, rounds=0))
    segment_stage(ws, stage, [], [], ws.modality, budget, device, 0, progress, should_stop, client=client)
    with ReviewStore.for_workspace(ws.root) as store:
        return score_stage(ws, stage, store, settings, progress, should_stop, client)


# --- 4. accept ------------------------------------------------------------------------------------------
def auto_accept(store: ReviewStore, modality: str, settings: FilterSettings = FilterSettings()) -> dict[str, str]:
    """Automatic acceptance, recorded as reviewer ``auto:<settings>``: among the cases no person has
    decided, the top ``top_k`` by ``settings.rule`` are accepted and the others rejected, the
    reason (case score, uncertainty, failed filters) in each decision's note. Returns case -> action."""
    reviewer = settings.reviewer()
    taken: dict[str, str] = {}
    queue = [row for row in store.queue(get_modality(modality).key) if row.label is not None]  # best case score first
    uncertainty = latest_uncertainty(store) if settings.rule == "uncertainty" else None
    if uncertainty is not None:
        rank = {c: i for i, c in enumerate(select_by_uncertainty(uncertainty, np.inf))}
        queue.sort(key=lambda row: rank.get(row.case, len(rank)))
    accepted, limit = 0, settings.limit(len(queue))
    for row in queue:
        _, last = store.state(row.case)
        if last is not None and not last.reviewer.startswith("auto:"):
            continue  # a person's decision is never overridden
        if last is not None and last.prediction_id == store.latest_prediction(row.case)[0]:
            accepted += last.action == "accept"
            continue  # this prediction was decided already
        failed, reason = _selection(row, settings.rule, uncertainty)
        if not failed and accepted < limit:
            store.decide(row.case, "accept", reviewer, note=reason + _label_kind(row, uncertainty is not None))
            accepted += 1
            taken[row.case] = "accept"
        else:
            store.decide(row.case, "reject", reviewer, note="; ".join(failed) or f"outside the top {limit} ({reason})")
            taken[row.case] = "reject"
    return taken


def _label_kind(row: Any, union: bool) -> str:
    """What an accepted queue row's pseudo-label is, for the decision's note: transferred, a union, or ''."""
    if any(f.name == TRANSFERRED for f in row.filters or ()):
        return "; pseudo-label: transferred from another sub-domain"
    return "; pseudo-label: the union of the rounds' predictions" if union else ""


def latest_uncertainty(store: ReviewStore) -> dict[str, float] | None:
    """Each case's uncertainty across rounds as the last finished round recorded it; None before any."""
    finished = [r for r in store.rounds() if r.finished]
    return finished[-1].uncertainty if finished else None


def _selection(row: Any, rule: str, uncertainty: dict[str, float] | None) -> tuple[list[str], str]:
    """(what rules a queue row out, why it is ranked where it is) under ``rule``."""
    if rule == "uncertainty" and uncertainty is not None:
        u = uncertainty.get(row.case)
        if u is None or not np.isfinite(u):
            return ["uncertainty: " + ("not scored in the last round" if u is None else "a round predicted no foreground")], ""
        return [], f"uncertainty {u:.4f} across rounds"
    reason = f"case score {row.case_score:.3f}"
    if rule == "uncertainty":
        reason += " (round 1: no uncertainty across rounds yet, fold consistency instead)"
    return ([] if rule != "filters" else row.failed), reason


# --- 5. self-train ----------------------------------------------------------------------------------------
def base_stage(ws: Workspace) -> str:
    """The stage self-training starts from (the chosen translator's), as recorded by the pipeline."""
    pipeline = ws.pipeline()
    stage = pipeline.base_stage if pipeline else None
    if not stage or not ws.stage(stage):
        raise UdaError(f"{ws.root}: no scored base stage to self-train from; run `napari-uda pipeline` first")
    return stage


def round_stages(ws: Workspace) -> list[str]:
    """The base stage and every finished self-training round, in order."""
    stages = [base_stage(ws)]
    r = 1
    while ws.stage_done(stage_for_round(r)):
        stages.append(stage_for_round(r))
        r += 1
    return stages


def self_training_round(ws: Workspace, store: ReviewStore, r: int, budget: Budget, device: str = "cpu",
                        settings: FilterSettings = FilterSettings(), progress: Progress | None = None,
                        should_stop: StopFlag | None = None, client: Any = None) -> dict[str, Any]:
    """Round ``r``: translated CT (+ real CT where the pipeline uses it) + the accepted pseudo-labelled
    target scans as a new nnU-Net dataset,
    train, predict every target scan, score (refilling the queue) and compute each case's
    uncertainty across rounds. Recorded in the store and the manifest."""
    stage = stage_for_round(r)
    previous = round_stages(ws)
    if len(previous) < r:
        raise UdaError(f"round {r} needs round {r - 1} first")
    pipeline = ws.pipeline()
    variant = pipeline.variant
    used = store.round_cases(r)
    if not used:
        if not store.accepted():
            raise UdaError("no accepted pseudo-labels to self-train on: review the queue (`napari-uda review queue`, "
                           "`napari-uda review decide`) or choose automatic acceptance (--auto-accept)")
        used = store.start_round(r, {"stage": stage, "budget": budget.name, "variant": variant,
                                     "filters": asdict(settings)})
    if not ws.stage_done(stage):
        images, labels, names = source_training_set(ws, pipeline.training_variants(), pipeline.real_ct)
        case_images, case_labels = store.training_pairs(used)
        case_images = stage_inputs(ws, stage, case_images)
        images, labels, names = images + case_images, labels + case_labels, names + [stem_of(p) for p in case_images]
        segment_stage(ws, stage, images, labels, ws.modality, budget, device, r, progress, should_stop,
                      augment=pipeline.intensity_aug, names=names,
                      finetune_from=previous[-1] if pipeline.finetune else None, client=client)
        score_stage(ws, stage, store, settings, progress, should_stop, client)
    model_id = ws.stage(stage).model_id
    stages = previous[:r] + [stage]
    uncertainty = {}
    for path in ws.files("target_images"):
        case = stem_of(path)
        uncertainty[case] = round_uncertainty([read_volume(ws.predictions_dir(s) / f"{case}.nii.gz").array for s in stages])
    store.finish_round(r, model_id, uncertainty)
    if settings.rule == "uncertainty":
        record_union_labels(ws, store, stages, r, uncertainty)
    # u is infinite where a round predicts no foreground at all: JSON gets null for it
    ws.add_round(RoundRecord(r, stage, len(used), {c: (u if np.isfinite(u) else None) for c, u in uncertainty.items()},
                             select=settings.rule))
    emit(progress, stage, f"round {r} done; uncertainty across rounds: {describe_uncertainty(uncertainty)}")
    return {"round": r, "stage": stage, "uncertainty": uncertainty}


def record_union_labels(ws: Workspace, store: ReviewStore, stages: Sequence[str], r: int,
                        uncertainty: dict[str, float]) -> None:
    """ASIT's pseudo-labels for the next round: each target case's union (:func:`union_ensemble`)
    of the fused predictions of ``stages`` (the base stage and rounds 1..r), written to
    ``W/predictions/<round r>/union/<case>.nii.gz`` and recorded as the latest prediction of the
    case (model ``<workspace>:<stage>:union``, round ``r``) with the round's scores and filters plus
    an ``uncertainty`` outcome, so that accepting the case accepts its union."""
    last = stages[-1]
    folder = ws.predictions_dir(last) / "union"
    model_id = store.add_model(f"{ws.root.name}:{last}:union", folder, r, {"stage": last, "union_of": list(stages)})
    rows, recorded = {row.case: row for row in store.queue(ws.modality)}, store.model_cases(model_id)
    for path in ws.files("target_images"):
        case, u = stem_of(path), uncertainty[stem_of(path)]
        if case in recorded:  # a resumed run: the union (and whatever replaced it since) stays
            continue
        vols = [read_volume(ws.predictions_dir(s) / f"{case}.nii.gz") for s in stages]
        label = write_volume(Volume(union_ensemble([v.array for v in vols]), vols[-1].geometry), folder / f"{case}.nii.gz")
        outcome = FilterResult("uncertainty", bool(np.isfinite(u)), f"{u:.4f} across {len(stages)} rounds" if np.isfinite(u)
                               else "a round predicted no foreground")
        store.add_replacement(case, model_id, label, outcome, rows[case])


def union_for_round(ws: Workspace, store: ReviewStore, r: int) -> None:
    """:func:`record_union_labels` after finished round ``r``: over the base stage and rounds 1..r,
    with round ``r``'s uncertainty from the store."""
    (row,) = [x for x in store.rounds() if x.round == r and x.finished]
    record_union_labels(ws, store, round_stages(ws)[:r + 1], r, row.uncertainty)


def transfer_for_round(ws: Workspace, store: ReviewStore, progress: Progress | None = None,
                       should_stop: StopFlag | None = None) -> dict[str, str]:
    """ASIT's multi-domain matching as the pipeline records it (``transfer_from``): the other
    workspace's final labels carried onto this workspace's target scans of the same patients and made
    their latest pseudo-labels, for the next acceptance (:func:`transfer_from_workspace`; the cases
    this round transferred already are kept). Returns case -> reason for the cases transferred now."""
    pipeline = ws.pipeline()
    if pipeline is None or pipeline.transfer_from is None:
        return {}
    return transfer_from_workspace(ws, store, pipeline.transfer_from, pipeline.transfer_pair_by,
                                   pipeline.transfer_patient, progress, should_stop)


def describe_uncertainty(uncertainty: dict[str, float]) -> str:
    """Mean over the cases where it is finite, and how many cases lost all foreground."""
    finite = [u for u in uncertainty.values() if np.isfinite(u)]
    empty = len(uncertainty) - len(finite)
    mean = f"mean {np.mean(finite):.4f}" if finite else "no finite value"
    return mean + (f"; {empty} case(s) with no foreground in this round" if empty else "")


def self_train(ws: Workspace, rounds: int, budget: Budget, auto: bool = False, device: str = "cpu",
               settings: FilterSettings = FilterSettings(), progress: Progress | None = None,
               should_stop: StopFlag | None = None, client: Any = None, tta: bool | None = None,
               coarse_to_fine: bool | None = None, margin_mm: float = CROP_MARGIN_MM,
               transfer: TransferFrom | None = None) -> list[dict[str, Any]]:
    """Run self-training until ``rounds`` rounds exist (finished rounds are kept). With ``auto``
    the selection rule accepts pseudo-labels before each round (recorded as reviewer ``auto:<settings>``).
    ``tta``: test-time mirroring (and mirroring augmentation) for the rounds from now on;
    ``coarse_to_fine``: coarse and fine models (crops with ``margin_mm``) for the rounds from now
    on; ``transfer``: the other sub-domain's workspace whose final labels are transferred into the
    queue before each round (:func:`transfer_for_round`; ``TransferFrom(None)``: no more); all recorded
    in the pipeline's settings, None: as recorded. The queue left for the next round holds the
    transferred labels too (with ``rounds`` done already, that is all it does)."""
    if transfer is not None:
        base_stage(ws)  # a pipeline to record it in
        transfer.check(ws)
    pipeline = ws.pipeline()
    if pipeline is not None:
        changed = replace(pipeline, tta=pipeline.tta if tta is None else tta,
                          crop_margin_mm=pipeline.crop_margin_mm if coarse_to_fine is None
                          else (margin_mm if coarse_to_fine else None),
                          **(transfer.fields() if transfer is not None else {}))
        if changed != pipeline:
            ws.set_pipeline(changed)
    done = []
    with ReviewStore.for_workspace(ws.root) as store:
        for r in range(1, rounds + 1):
            if ws.stage_done(stage_for_round(r)) and any(x.round == r for x in ws.rounds()):
                continue
            if settings.rule == "uncertainty" and r > 1 and auto:  # idempotent where round r - 1 recorded them
                union_for_round(ws, store, r - 1)
            if not store.round_cases(r):  # before the round's acceptance, not in a resumed round
                transfer_for_round(ws, store, progress, should_stop)
            if auto:
                auto_accept(store, ws.modality, settings)
                if not store.accepted() and not store.round_cases(r):
                    reasons = [f"{q.case}: " + "; ".join(q.failed) for q in store.queue(ws.modality)]
                    raise UdaError("automatic acceptance: no pseudo-label passed the filters, so there is nothing to "
                                   "self-train on; review the cases by hand (`napari-uda review queue`) or train longer. "
                                   + " | ".join(reasons[:3]))
            done.append(self_training_round(ws, store, r, budget, device, settings, progress, should_stop, client))
        transfer_for_round(ws, store, progress, should_stop)  # into the queue of the round to come
    return done


# --- 6. the whole pipeline ------------------------------------------------------------------------------
def postprocess_case(src: str, dst: str) -> str:
    """One case's final labels (a task of its own on a cluster): the fused labels at ``src``
    post-processed (largest components, holes, small fragments), written to ``dst`` with their geometry."""
    vol = read_volume(src)
    return str(write_volume(Volume(postprocess(vol.array, vol.spacing), vol.geometry), dst))


def write_final(ws: Workspace, stage: str, progress: Progress | None = None, should_stop: StopFlag | None = None,
                client: Any = None) -> Path:
    """Post-process the fused labels of ``stage`` (:func:`postprocess_case`, on ``client``'s cluster
    if given) into ``W/predictions/final/<case>.nii.gz``."""
    out, cases = ws.predictions_dir("final"), [stem_of(p) for p in ws.files("target_images")]
    run_tasks(client, postprocess_case, [(str(ws.predictions_dir(stage) / f"{c}.nii.gz"), str(out / f"{c}.nii.gz"))
                                         for c in cases], cases, "final", progress, should_stop)
    ws.record("final", StageRecord("done", str(out), from_stage=stage, postprocessed=True))
    return out


def evaluate_stages(ws: Workspace, gt: str | Path, tolerance_mm: float | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate every stage's predictions against the labels in ``gt`` (evaluation only), writing
    ``W/reports/evaluation_<stage>.{json,csv,md}``; returns stage -> Evaluation, in stage order."""
    from napari_uda.evaluate.evaluation import evaluate_folders

    kind = get_modality(ws.modality).kind
    stages = stage_order(list(ws.stages()))
    evaluations = {}
    for i, stage in enumerate(stages):
        evaluations[stage] = evaluate_folders(ws.predictions_dir(stage), gt, tolerance_mm, kind)
        evaluations[stage].write(ws.evaluation_prefix(stage))
        emit(progress, stage, f"evaluated {stage}", i + 1, len(stages), "stages")
    return evaluations


def _pipeline_settings(ws: Workspace, budget: Budget, variant: str, ablation_variants: Sequence[str] | None,
                       pool_variants: Sequence[str] | None, real_ct: bool) -> tuple[str, list[str], list[str] | None]:
    """Check a pipeline's translator choices against each other and against what the workspace
    already ran; returns (base stage, the other translators of the ablation, the pooled ones or None)."""
    if variant not in BASE_STAGES:
        raise UdaError(f"the pipeline's translator variant is one of {', '.join(BASE_STAGES)}, not {variant!r}")
    others = [v for v in (BASE_STAGES if ablation_variants is None else ablation_variants) if v != variant]
    unknown = [v for v in [*others, *(pool_variants or [])] if v not in BASE_STAGES]
    if unknown:
        raise UdaError(f"translator variants {', '.join(unknown)}: choose among {', '.join(BASE_STAGES)}")
    if pool_variants is not None:
        if len(set(pool_variants)) < 2 or variant not in pool_variants:
            raise UdaError(f"pooling needs two or more translators, among them the pipeline's variant {variant}")
        if set(pool_variants) & set(SOBEL_SPACE_VARIANTS):
            raise UdaError("a Sobel-space translator (asit) cannot be pooled with translations in intensity space")
    recorded = ws.pipeline()
    pool = list(pool_variants) if pool_variants else None
    if recorded and (recorded.variant, recorded.budget, recorded.real_ct, recorded.pool_variants) != (
            variant, budget.name, real_ct, pool):
        raise UdaError(f"{ws.root}: this workspace ran the pipeline with {recorded.variant} / {recorded.budget} "
                       f"(real CT {'in' if recorded.real_ct else 'not in'} the training data, pooling "
                       f"{','.join(recorded.pool_variants or []) or 'none'}); "
                       "use the same settings to continue or another workspace")
    return (POOLED if pool else BASE_STAGES[variant]), others, pool


def run_pipeline(ws: Workspace, budget: Budget, variant: str = "organ-attention", rounds: int = 1, auto: bool = False,
                 ablation: bool = False, device: str = "cpu", settings: FilterSettings = FilterSettings(),
                 progress: Progress | None = None, should_stop: StopFlag | None = None,
                 real_ct: bool = True, intensity_aug: bool = True, finetune: bool = True,
                 client: Any = None, ablation_variants: Sequence[str] | None = None,
                 pool_variants: Sequence[str] | None = None, tta: bool = False, coarse_to_fine: bool = False,
                 margin_mm: float = CROP_MARGIN_MM, transfer: TransferFrom = TransferFrom(None)) -> dict[str, Any]:
    """Translate, train, predict, score, accept, self-train ``rounds`` rounds, write the final
    predictions. Segmenters train on translated CT plus, with ``real_ct`` (FLARE 2025's RCT+FI),
    the real CT. With ``pool_variants`` (TANQ's multi-view pooling; ``variant`` among them) the
    base stage ``pooled`` trains one segmenter on the translations of each of these translators
    (a pooled translator's own stage is trained only as an ablation variant).
    With ``ablation`` also the stages the variant does not need: the strong
    source-only baseline ``no_adaptation`` (real CT normalised as the targets are, strong intensity
    augmentation) and the other translators (``ablation_variants``; None: every one). ``intensity_aug`` gives every stage's segmenter that
    same augmentation, so the stages differ only in what they train on. With ``finetune`` (FLARE
    2025's choice; measured better here, ``benchmarks/RESULTS.md``) each self-training round
    fine-tunes the previous stage's folds instead of training from scratch. With ``tta`` the stages
    trained from now on train with mirroring augmentation and predict with test-time mirroring
    (nnU-Net's, over the axes the trainer allows). With ``coarse_to_fine`` (FLARE 2025) each stage
    trained from now on is two models, a coarse one on whole volumes at twice the spacing and a fine
    one on crops of the organs' region with ``margin_mm``; the coarse model finds the region in each
    target scan, the fine one segments it (serially, also with a ``client``). With ``transfer`` (ASIT's
    multi-domain matching) the final labels of another workspace, the same patients in another
    sub-domain, are registered onto the target scans and take the place of their pseudo-labels in
    the queue before each acceptance (:func:`transfer_for_round`). With a Dask ``client``
    the folds train in parallel and prediction and scoring run as tasks on its cluster. Returns
    ``{"status": "done" | "awaiting review", ...}``."""
    if auto and settings.rule == "uncertainty" and rounds < 2:
        raise UdaError("selection by uncertainty needs at least 2 self-training rounds (round 1 has no uncertainty "
                       "across rounds yet); run 2 or more rounds, or choose another selection rule")
    base, others, pool = _pipeline_settings(ws, budget, variant, ablation_variants, pool_variants, real_ct)
    transfer.check(ws)
    ws.set_pipeline(PipelineRecord(variant, budget.name, base, rounds, auto, ablation, real_ct, intensity_aug, finetune,
                                   list(others) if ablation else None, pool, tta,
                                   margin_mm if coarse_to_fine else None, **transfer.fields()))
    segmented = ([] if pool else [variant]) + (others if ablation else [])  # translators with a stage of their own
    with ReviewStore.for_workspace(ws.root) as store:
        if ablation:
            segment_stage(ws, "no_adaptation", ws.files("source_images"), ws.files("source_labels"), ws.modality,
                          budget, device, 0, progress, should_stop, augment=True, client=client)
        for v in dict.fromkeys([*(pool or []), *segmented]):
            translate_stage(ws, v, budget, device, progress, should_stop)
        for stage, trained_on in [(BASE_STAGES[v], [v]) for v in segmented] + ([(POOLED, pool)] if pool else []):
            images, labels, names = source_training_set(ws, trained_on, real_ct)
            segment_stage(ws, stage, images, labels, ws.modality, budget, device, 0, progress, should_stop,
                          augment=intensity_aug, names=names, client=client)
        if not ws.stage_done(base):  # the ablation stages are evaluated, not reviewed
            score_stage(ws, base, store, settings, progress, should_stop, client)
        if not ws.rounds():
            transfer_for_round(ws, store, progress, should_stop)
        if rounds > 0 and not auto and not store.accepted():
            waiting = len(store.queue(ws.modality))
            return {"status": "awaiting review", "cases": waiting,
                    "message": f"{waiting} pseudo-label(s) await review: `napari-uda review queue --workspace {ws.root}`; "
                               "decide, then run the same command again (or pass --auto-accept)"}
    self_train(ws, rounds, budget, auto, device, settings, progress, should_stop, client)
    last = round_stages(ws)[-1] if rounds > 0 else base
    final = write_final(ws, last, progress, should_stop, client)
    return {"status": "done", "final": str(final), "from_stage": last, "stages": stage_order(list(ws.stages()))}
