"""The ``napari-uda`` command line: every widget action has a sub-command here."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_uda.cli.console import Console
from napari_uda.core.choices import (
    ACCEPT_RULES,
    BASE_STAGES,
    BUDGETS as PIPELINE_BUDGETS,
    FUSIONS,
    PLANNERS,
    S_REGIMES,
    SEGMENTER_BUDGETS,
    VARIANTS,
    Budget,
)
from napari_uda.core.errors import UdaError

if TYPE_CHECKING:
    from napari_uda.pipeline.workflow import FilterSettings


def _bounded(kind: type, low: float, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` number in [low, high] (argparse turns the ValueError into one usage line)."""
    def parse(text: str) -> Any:
        value = kind(text)
        if not (low <= value and (high is None or value <= high)) or value != value:
            raise ValueError(text)
        return value

    parse.__name__ = f"{kind.__name__} in [{low}, {'inf' if high is None else high}]"
    return parse


def _writable(path: Path, text: str) -> Path:
    """``path``'s nearest existing folder (itself or an ancestor), which must be writable."""
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is not writable")
    return ancestor


def _output_folder(text: str) -> Path:
    """An argparse type: a folder to write into (existing or creatable), checked before any work."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    _writable(path, text)
    return path


def _output_prefix(text: str) -> Path:
    """An argparse type: FILE of FILE.json/.csv/.md, in a folder that can be written."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name prefix (FILE writes FILE.json ...)")
    _writable(path.parent, text)
    return path


OUTPUT_FOLDER, OUTPUT_PREFIX = _output_folder, _output_prefix
COUNT = _bounded(int, 1)  # at least one
NON_NEGATIVE = _bounded(int, 0)
DATASET_ID = _bounded(int, 1, 999)
FOLD = _bounded(int, 0, 99)
SPACING_FACTOR = _bounded(float, 1.0, 16.0)  # beyond 16 a 512-voxel axis is a few voxels: nothing left to learn
MILLIMETRES = _bounded(float, 0.0, 1000.0)


def _cmd_info(args: argparse.Namespace) -> int:
    from napari_uda.core.io import format_info, read_volume, volume_info

    for path in args.files:
        info = volume_info(read_volume(path))
        print(json.dumps({"file": str(path), **info}, indent=2) if args.json else format_info(path, info))
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from napari_uda.data.phantom import write_phantom_dataset

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    manifest = write_phantom_dataset(
        args.out, {m: args.cases for m in modalities}, seed=args.seed, shape=tuple(args.shape),
        progress=lambda i, n, name: args.console("phantom", i, n, name),
    )
    print(f"wrote {sum(len(v) for v in manifest['files'].values())} cases to {args.out}")
    return 0


def _cmd_translate_train(args: argparse.Namespace) -> int:
    import signal

    import numpy as np

    from napari_uda.core.io import list_volumes, pair_labels
    from napari_uda.translate.translator import TranslatorConfig, train_translator

    cfg = TranslatorConfig(
        modality=args.modality, variant=args.variant, size=args.size, iterations=args.iterations, ngf=args.ngf,
        ndf=args.ndf, n_blocks=args.blocks, lambda_identity=args.identity, batch_size=args.batch, fusion=args.fusion,
        s_regime=args.s_regime, seg_head=args.seg_head, skips=args.skips, checkpoint_every=args.checkpoint_every,
        preview_every=args.preview_every, seed=args.seed,
    )
    ct = list_volumes(args.ct_images)
    labels = pair_labels(ct, args.ct_labels) if args.ct_labels else None
    targets = list_volumes(args.target_images)
    stop = {"flag": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    out = Path(args.out)
    log = (out / "progress.jsonl") if args.progress_jsonl is None else Path(args.progress_jsonl)
    out.mkdir(parents=True, exist_ok=True)
    if log.exists() and log.stat().st_size and not log.read_bytes().endswith(b"\n"):
        with open(log, "a") as f:  # a killed run may have left half a line
            f.write("\n")

    def progress(event: dict) -> None:
        if "preview" in event:
            path = out / "previews" / f"preview_{event['iteration']:07d}.npz"
            path.parent.mkdir(exist_ok=True)
            ct_s, fake_s, att_s = event.pop("preview")
            np.savez_compressed(path, ct=ct_s, translated=fake_s, attention=att_s)
            event["preview"] = str(path)
        with open(log, "a") as f:
            f.write(json.dumps(event) + "\n")
        task = "pretraining S" if event.get("stage") == "pretrain_S" else f"translator {cfg.variant}"
        if "event" in event:
            args.console(task, text=event["event"])
        else:
            losses = " ".join(f"{k}={v:.3f}" for k, v in event.get("losses", {}).items())
            args.console(task, event["iteration"], event["total"], losses, losses_by_name=event.get("losses"))

    train_translator(cfg, ct, labels, targets, out, device=args.device, progress=progress, should_stop=lambda: stop["flag"])
    if stop["flag"]:
        print(f"stopped; checkpoint saved in {out}; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"translator written to {out}")
    return 0


def _cmd_translate_apply(args: argparse.Namespace) -> int:
    from napari_uda.core.io import read_volume, stem_of, volume_inputs, write_volume
    from napari_uda.translate.translator import load_translator, translate_volume

    tr = load_translator(args.translator, device=args.device)
    inputs = volume_inputs(args.input)
    for i, path in enumerate(inputs):
        translated, attention = translate_volume(tr, read_volume(path, "CT"))
        write_volume(translated, Path(args.out) / f"{stem_of(path)}.nii.gz")
        if args.attention_out and attention is not None:
            write_volume(attention, Path(args.attention_out) / f"{stem_of(path)}.nii.gz")
        args.console("translate", i + 1, len(inputs), f"{path.name} -> {tr.modality}")
    print(f"translated {len(inputs)} volume(s) into {args.out}")
    return 0


def _cmd_segment_export(args: argparse.Namespace) -> int:
    from napari_uda.core.io import list_volumes, pair_labels
    from napari_uda.segment.segmenter import export_dataset

    images = list_volumes(args.images)
    target = export_dataset(args.workspace, args.dataset, args.name, images, pair_labels(images, args.labels), args.modality,
                            args.spacing_factor)
    print(f"exported {len(images)} cases to {target}")
    return 0


def _cmd_segment_plan(args: argparse.Namespace) -> int:
    from napari_uda.segment.segmenter import plan_and_preprocess

    plan_and_preprocess(args.workspace, args.dataset, args.planner, args.configuration)
    print(f"planned and preprocessed dataset {args.dataset} ({args.planner}, {args.configuration})")
    return 0


def _cmd_segment_train(args: argparse.Namespace) -> int:
    from napari_uda.core.device import pick_device
    from napari_uda.segment.segmenter import train_folds

    device = str(pick_device(args.device))

    model = train_folds(args.workspace, args.dataset, args.folds, args.budget, args.planner, args.configuration, device,
                        lambda event: _show_training(args.console, event, f"fold {event.get('fold')}"))
    print(f"trained folds {' '.join(map(str, args.folds))} in {model}")
    return 0


def _cmd_segment_predict(args: argparse.Namespace) -> int:
    from napari_uda.core.device import pick_device
    from napari_uda.core.io import volume_inputs
    from napari_uda.segment.segmenter import NnunetFolders, coarse_to_fine_predict, predict_folds

    if args.model is not None:
        if args.workspace is not None or args.dataset is not None or args.coarse_dataset is not None:
            raise UdaError("--model predicts with a model folder; leave out --workspace, --dataset and --coarse-dataset")
        model = args.model
    elif args.workspace is None or args.dataset is None:
        raise UdaError("segment predict needs --model DIR, or --workspace W and --dataset ID")
    else:
        folders = NnunetFolders(Path(args.workspace))
        model = folders.model_dir(args.dataset, args.budget, args.planner, args.configuration)
    inputs = volume_inputs(args.input)
    device = str(pick_device(args.device))

    def progress(e: dict) -> None:
        args.console(f"predict fold {e['fold']}", e["done"], e["total"], f"{e['case']} {e['seconds']:.1f} s")

    if args.coarse_dataset is not None:
        coarse = folders.model_dir(args.coarse_dataset, args.budget, args.planner, args.configuration)
        records = coarse_to_fine_predict(coarse, model, inputs, args.out, args.coarse_spacing_factor, args.margin_mm,
                                         args.folds, device, progress)
    else:
        records = predict_folds(model, inputs, args.out, args.folds, device, args.save_probabilities, args.mirroring,
                                progress=progress)
    print(f"predicted {len(records)} case(s) into {args.out}")
    return 0


def _cmd_models_export(args: argparse.Namespace) -> int:
    from napari_uda.core.workspace import Workspace
    from napari_uda.pipeline.export import export_stage

    out = export_stage(Workspace.open(args.workspace), args.stage, args.out)
    print(f"exported stage {args.stage} to {out}")
    return 0


def _cmd_review_queue(args: argparse.Namespace) -> int:
    from napari_uda.review.store import ReviewStore

    with ReviewStore.for_workspace(args.workspace) as store:
        rows = store.queue(args.modality)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        failed = [f"{f['name']}: {f['reason']}" for f in (r["filters"] or []) if not f["passed"]]
        score = f"{r['case_score']:.3f}" if r["case_score"] is not None else "  -  "
        state = r["state"] + ("*" if r["state"] != "not reviewed" and not r["decided_on_latest"] else "")
        print(f"{r['case']:<24} {r['modality']:<9} score {score}  {state:<13} {'; '.join(failed) or 'filters passed'}")
    if any(r["state"] != "not reviewed" and not r["decided_on_latest"] for r in rows):
        print("* decided on an earlier round's prediction")
    return 0


def _cmd_review_decide(args: argparse.Namespace) -> int:
    from napari_uda.core.io import read_volume
    from napari_uda.review.store import ReviewStore

    action = "edited" if args.label else ("accept" if args.accept else "reject" if args.reject else "undo")
    if args.label and not args.accept:
        raise UdaError("--label is the edited label of an accepted case: use it with --accept")
    edited = read_volume(args.label) if args.label else None
    with ReviewStore.for_workspace(args.workspace) as store:
        d = store.decide(args.case, action, args.reviewer, args.note, edited_label=edited, label_name=str(args.label))
        state, _ = store.state(args.case)
    if args.json:
        print(json.dumps({"id": d.id, "case": d.case_id, "action": d.action, "reviewer": d.reviewer, "at": d.at,
                          "label_hash": d.label_hash, "label_path": d.label_path, "state": state}))
    else:
        print(f"{d.case_id}: {d.action} by {d.reviewer} at {d.at}; now {state}")
    return 0


def _cmd_review_export(args: argparse.Namespace) -> int:
    from napari_uda.core.io import list_volumes, pair_labels
    from napari_uda.review.store import ReviewStore
    from napari_uda.segment.segmenter import export_dataset

    with ReviewStore.for_workspace(args.workspace) as store:
        accepted = store.accepted()
        paths = dict(store.db.execute("SELECT id, path FROM cases").fetchall())
    images, labels = [], []
    if args.translated_ct and not args.ct_labels:
        raise UdaError("--translated-ct needs --ct-labels (the CT labels, same file names)")
    if args.translated_ct:
        ct = list_volumes(args.translated_ct)
        images, labels = list(ct), pair_labels(ct, args.ct_labels)
    images += [Path(paths[c]) for c, _ in accepted]
    labels += [Path(lab) for _, lab in accepted]
    if not images:
        raise UdaError("nothing to export: no accepted cases and no --translated-ct")
    target = export_dataset(args.workspace, args.dataset, args.name, images, labels, args.modality)
    print(f"exported {len(accepted)} accepted case(s) and {len(images) - len(accepted)} translated CT case(s) to {target}")
    return 0


def _show_training(console: Console, event: dict, task: str) -> None:
    """nnU-Net trainer events: a bar per epoch of iterations, one over the epochs, other notes."""
    if "iteration" in event:
        console(f"{task} epoch {event['of_epoch']}", event["iteration"], event["num_iterations"], "iterations",
                unit="iterations")
    elif "epoch" in event:
        console(task, event["epoch"], event["num_epochs"], f"epochs, train_loss={event['train_loss']:.3f} "
                f"val_loss={event['val_loss']:.3f}", pseudo_dice=event.get("pseudo_dice"))
    else:
        console(task, text=event.get("event", ""))


def _event_printer(console: Console) -> Callable[[dict], None]:
    """The pipeline's progress events on the console."""
    def show(event: dict) -> None:
        task = event["stage"] + (f" fold {event['fold']}" if "fold" in event else "")
        if "iteration" in event:
            _show_training(console, event, task)
        else:
            console(task, event.get("done"), event.get("total"), event["message"])
    return show


def _cmd_workspace_show(args: argparse.Namespace) -> int:
    from napari_uda.core.workspace import Workspace
    from napari_uda.review.store import ReviewStore

    ws = Workspace.open(args.workspace)
    with ReviewStore.for_workspace(ws.root) as store:
        counts = store.state_counts()
    if args.json:
        print(json.dumps({**ws.manifest, "review": counts}, indent=2))
    else:
        for what, value in ws.summary(counts):
            print(f"{what:<28} {value}")
    return 0


def _acceptance(args: argparse.Namespace, budget: Budget) -> FilterSettings:
    """Automatic acceptance's settings: the options given, else the budget's rule and the better half."""
    from napari_uda.pipeline.workflow import FilterSettings

    return FilterSettings(top_k=args.top_k, rule=args.accept_rule or budget.accept_rule)


def _cmd_selftrain(args: argparse.Namespace) -> int:
    from napari_uda.core.choices import get_budget
    from napari_uda.core.device import pick_device
    from napari_uda.core.workspace import Workspace
    from napari_uda.pipeline.workflow import describe_uncertainty, self_train

    ws = Workspace.open(args.workspace)
    budget = get_budget(args.budget)
    done = self_train(ws, args.rounds, budget, args.auto_accept, str(pick_device(args.device)),
                      _acceptance(args, budget), _event_printer(args.console))
    for r in done:
        print(f"round {r['round']}: predictions in {ws.predictions_dir(r['stage'])}; "
              f"uncertainty across rounds: {describe_uncertainty(r['uncertainty'])}")
    if not done:
        print(f"{args.rounds} round(s) already done in {ws.root}")
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from napari_uda.core.choices import get_budget
    from napari_uda.core.device import pick_device
    from napari_uda.core.workspace import Workspace
    from napari_uda.evaluate.evaluation import compare_markdown
    from napari_uda.pipeline.workflow import evaluate_stages, run_pipeline

    ws = Workspace.create(args.workspace, args.source_images, args.source_labels, args.target_images, args.modality)
    budget = get_budget(args.budget)
    result = run_pipeline(ws, budget, args.variant, args.rounds, args.auto_accept, args.ablation, str(pick_device(args.device)),
                          _acceptance(args, budget), _event_printer(args.console),
                          real_ct=not args.no_real_ct, intensity_aug=not args.no_intensity_aug,
                          finetune=not args.no_finetune)
    if result["status"] != "done":
        print(result["message"], file=sys.stderr)
        return 3
    print(f"final predictions (from {result['from_stage']}, post-processed) in {result['final']}")
    if args.eval_labels:
        evaluations = evaluate_stages(ws, args.eval_labels)
        table = compare_markdown(evaluations, "dsc") + "\n" + compare_markdown(evaluations, "nsd")
        (ws.reports_dir / "stages.md").write_text(table)
        print(table)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_uda.core.modalities import get_modality
    from napari_uda.evaluate.evaluation import evaluate_folders

    ev = evaluate_folders(args.pred, args.gt, args.tolerance_mm, get_modality(args.modality).kind,
                          progress=lambda i, n, case: args.console("evaluate", i, n, case))
    paths = ev.write(args.out)
    print(ev.to_markdown())
    if ev.missing:
        print(f"missing predictions (scored as empty): {', '.join(ev.missing)}", file=sys.stderr)
    if ev.extra:
        print(f"predictions without ground truth (not scored): {', '.join(ev.extra)}", file=sys.stderr)
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from napari_uda.napari.demo import run_demo

    return run_demo(Path(args.out), headless=args.headless, budget=args.budget, pipeline=not args.skip_pipeline,
                    train=args.train)


def build_parser() -> argparse.ArgumentParser:
    from napari_uda.data.phantom import DEFAULT_SHAPE, PHANTOM_MODALITIES

    parser = argparse.ArgumentParser(
        prog="napari-uda",
        description="Unsupervised domain adaptation of abdominal organ segmentation from CT to MRI and PET.",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="no progress output (results and errors still print)")
    output.add_argument("--log-json", action="store_true",
                        help="progress as one JSON object per line on stderr (for machines and the widgets)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="print shape, spacing, origin, direction, dtype and intensity percentiles")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="volume file or DICOM folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("phantom", help="write synthetic abdominal patients (images and organ labels)")
    p.add_argument("out", type=OUTPUT_FOLDER, metavar="OUT")
    p.add_argument("--cases", type=COUNT, default=2, help="patients per modality (default 2)")
    p.add_argument("--modalities", default="ct,t2wi",
                   help="comma-separated, from: " + ",".join(m.slug for m in PHANTOM_MODALITIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=_bounded(int, 8, 2048), nargs=3, default=list(DEFAULT_SHAPE), metavar=("Z", "Y", "X"))
    p.set_defaults(func=_cmd_phantom)

    tp = sub.add_parser("translate", help="train or apply CT-to-MRI/PET translators").add_subparsers(
        dest="translate_command", required=True, metavar="ACTION")

    p = tp.add_parser("train", help="train (or resume) a translator for one target modality")
    p.add_argument("--ct-images", required=True, type=Path)
    p.add_argument("--ct-labels", type=Path, help="CT organ labels (same file names); needed for organ attention")
    p.add_argument("--target-images", required=True, type=Path, help="unpaired target-modality volumes")
    p.add_argument("--modality", required=True, help="target modality, e.g. T2WI, C+V, PET-FDG")
    p.add_argument("--variant", default="organ-attention", choices=VARIANTS)
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER)
    p.add_argument("--iterations", type=COUNT, default=2000)
    p.add_argument("--size", type=_bounded(int, 16, 4096), default=256, help="in-plane training size in pixels")
    p.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)")
    p.add_argument("--ngf", type=COUNT, default=64)
    p.add_argument("--ndf", type=COUNT, default=64)
    p.add_argument("--blocks", type=COUNT, default=9, help="residual blocks in the generator")
    p.add_argument("--batch", type=COUNT, default=1)
    p.add_argument("--identity", type=_bounded(float, 0.0), default=0.5,
                   help="identity-loss weight (the reference CycleGAN's 0.5; 0 leaves it out: benchmarks/RESULTS.md)")
    p.add_argument("--fusion", default="additive", choices=FUSIONS)
    p.add_argument("--s-regime", default="joint", choices=S_REGIMES)
    p.add_argument("--seg-head", action="store_true", help="segmentation head on the generator (FLARE 2025)")
    p.add_argument("--skips", action="store_true", help="encoder-decoder skips in the generators (benchmarks/RESULTS.md)")
    p.add_argument("--checkpoint-every", type=NON_NEGATIVE, default=100)
    p.add_argument("--preview-every", type=NON_NEGATIVE, default=50)
    p.add_argument("--progress-jsonl", type=Path, default=None, help="progress events (default OUT/progress.jsonl)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_translate_train)

    p = tp.add_parser("apply", help="translate CT volumes with a trained translator")
    p.add_argument("--translator", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="a CT volume or a folder of them")
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER)
    p.add_argument("--attention-out", type=OUTPUT_FOLDER, default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_translate_apply)

    sp = sub.add_parser("segment", help="nnU-Net v2 segmenters: export, plan, train folds, predict").add_subparsers(
        dest="segment_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", required=True, type=Path)
        p.add_argument("--dataset", required=True, type=DATASET_ID, help="nnU-Net dataset id (1..999)")

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--planner", default="resenc-m", choices=list(PLANNERS))
        p.add_argument("--configuration", default="3d_fullres")

    p = sp.add_parser("export", help="write images + labels as an nnU-Net raw dataset in the workspace")
    common(p)
    p.add_argument("--name", required=True)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--modality", required=True, help="the images' modality (channel name), e.g. T2WI for translated CT")
    p.add_argument("--spacing-factor", type=SPACING_FACTOR, default=1.0, help="> 1: a low-resolution copy for a coarse model")
    p.set_defaults(func=_cmd_segment_export)
    p = sp.add_parser("plan", help="nnU-Net fingerprint, plan and preprocess")
    common(p)
    model_options(p)
    p.set_defaults(func=_cmd_segment_plan)
    p = sp.add_parser("train", help="train folds with a budget (resumes interrupted folds)")
    common(p)
    model_options(p)
    p.add_argument("--folds", type=FOLD, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--budget", default="full", choices=list(SEGMENTER_BUDGETS))
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_segment_train)
    p = sp.add_parser("predict", help="predict with every fold; per-fold probabilities and fused labels")
    p.add_argument("--model", type=Path, default=None,
                   help="a model folder (from 'models export', or an nnU-Net model folder with fold_k/model.safetensors)")
    p.add_argument("--workspace", type=Path, default=None, help="or: the workspace holding the model ...")
    p.add_argument("--dataset", type=DATASET_ID, default=None, help="... and its nnU-Net dataset id (1..999)")
    model_options(p)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER)
    p.add_argument("--folds", type=FOLD, nargs="+", default=None)
    p.add_argument("--budget", default="full", choices=list(SEGMENTER_BUDGETS))
    p.add_argument("--save-probabilities", action="store_true")
    p.add_argument("--mirroring", action="store_true", help="test-time mirroring")
    p.add_argument("--device", default=None)
    p.add_argument("--coarse-dataset", type=DATASET_ID, default=None,
                   help="coarse-to-fine: a low-resolution model (exported with --spacing-factor) finds the organs first")
    p.add_argument("--coarse-spacing-factor", type=SPACING_FACTOR, default=2.0)
    p.add_argument("--margin-mm", type=MILLIMETRES, default=10.0)
    p.set_defaults(func=_cmd_segment_predict)

    mp = sub.add_parser("models", help="hand models to others: safetensors + JSON, never a pickle").add_subparsers(
        dest="models_command", required=True, metavar="ACTION")
    p = mp.add_parser("export", help="write a stage's nnU-Net folds and translator as a model folder")
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--stage", required=True, help="a trained stage (e.g. organ_attention, self_training_r1, final)")
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER, help="the model folder to write (must not exist)")
    p.set_defaults(func=_cmd_models_export)

    rp = sub.add_parser("review", help="pseudo-label review: queue, decide, export accepted cases").add_subparsers(
        dest="review_command", required=True, metavar="ACTION")
    p = rp.add_parser("queue", help="cases ranked by score, with filter outcomes and current decision")
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--modality", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_review_queue)
    p = rp.add_parser("decide", help="accept, reject, accept an edited label, or undo the last decision")
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--case", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--accept", action="store_true")
    group.add_argument("--reject", action="store_true")
    group.add_argument("--undo", action="store_true")
    p.add_argument("--label", type=Path, default=None, help="the reviewer's edited label (with --accept)")
    p.add_argument("--note", default="")
    p.add_argument("--reviewer", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_review_decide)
    p = rp.add_parser("export", help="accepted cases (edited labels where edited) + translated CT as an nnU-Net dataset")
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--dataset", required=True, type=DATASET_ID)
    p.add_argument("--name", required=True)
    p.add_argument("--modality", required=True, help="channel name of the dataset, e.g. T2WI")
    p.add_argument("--translated-ct", type=Path, default=None)
    p.add_argument("--ct-labels", type=Path, default=None)
    p.set_defaults(func=_cmd_review_export)


    def budget_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--budget", default="small", choices=list(PIPELINE_BUDGETS),
                       help="tiny (tests), small (a CPU demo), full (a GPU); see napari_uda.core.choices.BUDGETS")
        p.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)")
        p.add_argument("--top-k", type=COUNT, default=None,
                       help="at most this many pseudo-labels accepted automatically (default: the better half)")
        p.add_argument("--accept-rule", default=None, choices=ACCEPT_RULES,
                       help="automatic acceptance: pass every filter (FLARE 2025) or fold consistency alone (FLARE 2024); "
                            "default: the budget's (consistency for tiny and small, filters for full)")

    p = sub.add_parser("workspace", help="show a workspace's manifest: data, translators, models, rounds, review")
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_workspace_show)

    p = sub.add_parser("pipeline", help="translate, segment, score, accept, self-train, predict: the whole method")
    p.add_argument("--source-images", required=True, type=Path, help="labelled CT volumes")
    p.add_argument("--source-labels", required=True, type=Path, help="their organ labels (same file names)")
    p.add_argument("--target-images", required=True, type=Path, help="unlabelled target scans")
    p.add_argument("--modality", required=True, help="target modality, e.g. T2WI, C+V, PET-FDG")
    p.add_argument("--workspace", required=True, type=OUTPUT_FOLDER)
    budget_option(p)
    p.add_argument("--variant", default="organ-attention", choices=list(BASE_STAGES))
    p.add_argument("--rounds", type=NON_NEGATIVE, default=1, help="self-training rounds (0: none)")
    p.add_argument("--auto-accept", action="store_true",
                   help="accept pseudo-labels that pass the filters without review (recorded as reviewer auto:<settings>)")
    p.add_argument("--ablation", action="store_true",
                   help="also the strong source-only baseline (no_adaptation) and the other translator")
    p.add_argument("--no-real-ct", action="store_true",
                   help="train the segmenters on translated CT only (default: translated + real CT, FLARE 2025's RCT+FI)")
    p.add_argument("--no-intensity-aug", action="store_true",
                   help="strong intensity augmentation for the source-only baseline only (default: every segmenter)")
    p.add_argument("--no-finetune", action="store_true",
                   help="train each self-training round from scratch (default: fine-tune the previous stage's folds, "
                        "as FLARE 2025)")
    p.add_argument("--eval-labels", type=Path, default=None,
                   help="target labels for evaluation only: score every stage and print the table")
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("selftrain", help="self-training rounds on a workspace the pipeline has scored")
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--rounds", type=NON_NEGATIVE, required=True, help="run rounds until this many exist")
    budget_option(p)
    p.add_argument("--auto-accept", action="store_true",
                   help="accept pseudo-labels that pass the filters without review (recorded as reviewer auto:<settings>)")
    p.set_defaults(func=_cmd_selftrain)

    p = sub.add_parser("evaluate", help="DSC and NSD per case and organ (FLARE rules) as JSON, CSV and Markdown")
    p.add_argument("--pred", required=True, type=Path)
    p.add_argument("--gt", required=True, type=Path)
    p.add_argument("--tolerance-mm", type=_bounded(float, 1e-6, 1000.0), default=None, help="one NSD tolerance for all organs (default: FLARE's per organ)")
    p.add_argument("--modality", default="MRI", help="PET modalities are scored on liver, kidneys and spleen only")
    p.add_argument("--out", required=True, type=OUTPUT_PREFIX, help="FILE: writes FILE.json, FILE.csv and FILE.md")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="open napari with the plugin's widgets and the sample data "
                                    "(headless: screenshots and a report)")
    p.add_argument("--out", type=OUTPUT_FOLDER, default="demo_output", help="where headless screenshots and the report go")
    p.add_argument("--headless", action="store_true", help="do not wait for the user; write screenshots and exit")
    p.add_argument("--train", action="store_true",
                   help="run the whole method from scratch instead of the bundled model (minutes to an hour)")
    p.add_argument("--budget", default="tiny", help="budget of --train (default tiny: minutes on a CPU, a poor model)")
    p.add_argument("--skip-pipeline", action="store_true", help="only open the viewer with the sample data and widgets")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 1, never a traceback."""
    from napari_uda.core.child import terminate_children_on_sigterm

    args = build_parser().parse_args(argv)
    args.console = Console(quiet=args.quiet, log_json=args.log_json)
    terminate_children_on_sigterm()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UdaError as exc:
        print(f"napari-uda: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("napari-uda: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen input: one line here, the traceback in a log
        log = _write_traceback(getattr(args, "workspace", None))
        print(f"napari-uda: error: unexpected {type(exc).__name__}: {exc} (traceback in {log})", file=sys.stderr)
        return 1


def _write_traceback(workspace: Path | None) -> Path:
    """Append the current exception's traceback to ``W/logs/errors.log`` (or the temp folder's
    ``napari-uda-errors.log`` outside a workspace); returns that path."""
    import tempfile
    import traceback
    from datetime import datetime, timezone

    logs = Path(workspace) / "logs" if workspace is not None and Path(workspace).is_dir() else None
    path = logs / "errors.log" if logs is not None else Path(tempfile.gettempdir()) / "napari-uda-errors.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')} napari-uda {' '.join(sys.argv[1:])}\n")
        f.write(traceback.format_exc())
    return path
