"""``segment export|plan|train|predict``: nnU-Net v2 segmenters in a workspace."""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_uda.cli.options import (
    DATASET_ID,
    FOLD,
    MILLIMETRES,
    OUTPUT_FOLDER,
    SPACING_FACTOR,
    add_dataset,
    add_device,
    add_nnunet_plan,
    add_scheduler,
    add_segmenter_budget,
    add_workspace,
)
from napari_uda.core.choices import COARSE_SPACING_FACTOR, CROP_MARGIN_MM
from napari_uda.core.errors import UdaError


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("segment", help="nnU-Net v2 segmenters: export, plan, train folds, predict").add_subparsers(
        dest="segment_command", required=True, metavar="ACTION")

    p = sp.add_parser("export", help="write images + labels as an nnU-Net raw dataset in the workspace")
    add_workspace(p)
    add_dataset(p)
    p.add_argument("--name", required=True)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--modality", required=True, help="the images' modality (channel name), e.g. T2WI for translated CT")
    p.add_argument("--spacing-factor", type=SPACING_FACTOR, default=1.0, help="> 1: a low-resolution copy for a coarse model")
    p.add_argument("--crop-margin-mm", type=MILLIMETRES, default=None,
                   help="crop each case to its organs plus this margin: the training data of a coarse-to-fine fine model")
    p.set_defaults(func=cmd_export)

    p = sp.add_parser("plan", help="nnU-Net fingerprint, plan and preprocess")
    add_workspace(p)
    add_dataset(p)
    add_nnunet_plan(p)
    p.set_defaults(func=cmd_plan)

    p = sp.add_parser("train", help="train folds with a budget (resumes interrupted folds)")
    add_workspace(p)
    add_dataset(p)
    add_nnunet_plan(p)
    p.add_argument("--folds", type=FOLD, nargs="+", default=[0, 1, 2, 3, 4])
    add_segmenter_budget(p)
    add_device(p)
    add_scheduler(p)
    p.set_defaults(func=cmd_train)

    p = sp.add_parser("predict", help="predict with every fold; per-fold probabilities and fused labels")
    p.add_argument("--model", type=Path, default=None,
                   help="a model folder (from 'models export', or an nnU-Net model folder with fold_k/model.safetensors)")
    add_workspace(p, required=False, help="or: the workspace holding the model ...")
    add_dataset(p, required=False, help="... and its nnU-Net dataset id (1..999)")
    add_nnunet_plan(p)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER)
    p.add_argument("--folds", type=FOLD, nargs="+", default=None)
    add_segmenter_budget(p)
    p.add_argument("--save-probabilities", action="store_true")
    p.add_argument("--mirroring", action="store_true", help="test-time mirroring")
    add_device(p)
    p.add_argument("--coarse-dataset", type=DATASET_ID, default=None,
                   help="coarse-to-fine: a low-resolution model (exported with --spacing-factor) finds the organs first")
    p.add_argument("--coarse-spacing-factor", type=SPACING_FACTOR, default=COARSE_SPACING_FACTOR)
    p.add_argument("--margin-mm", type=MILLIMETRES, default=CROP_MARGIN_MM)
    add_scheduler(p)
    p.set_defaults(func=cmd_predict)


def cmd_export(args: argparse.Namespace) -> int:
    from napari_uda.core.files import list_volumes, pair_labels
    from napari_uda.segment.segmenter import export_dataset

    images = list_volumes(args.images)
    target = export_dataset(args.workspace, args.dataset, args.name, images, pair_labels(images, args.labels), args.modality,
                            args.spacing_factor, crop_margin_mm=args.crop_margin_mm)
    print(f"exported {len(images)} cases to {target}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from napari_uda.segment.segmenter import plan_and_preprocess

    plan_and_preprocess(args.workspace, args.dataset, args.planner, args.configuration)
    print(f"planned and preprocessed dataset {args.dataset} ({args.planner}, {args.configuration})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from napari_uda.cluster.engine import dask_client
    from napari_uda.cluster.train import train_folds_on
    from napari_uda.core.device import pick_device

    device = str(pick_device(args.device))
    with dask_client(args.scheduler, args.workers, device) as client:
        model = train_folds_on(client, args.workspace, args.dataset, args.folds, args.budget, args.planner,
                               args.configuration, device, args.console)
    print(f"trained folds {' '.join(map(str, args.folds))} in {model}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_uda.cluster.engine import dask_client
    from napari_uda.cluster.predict import predict_folds_on
    from napari_uda.core.device import pick_device
    from napari_uda.core.files import volume_inputs
    from napari_uda.segment.segmenter import NnunetFolders, coarse_to_fine_predict

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

    if args.coarse_dataset is not None:
        if args.scheduler is not None:
            raise UdaError("--coarse-dataset predicts serially; leave out --scheduler")
        coarse = folders.model_dir(args.coarse_dataset, args.budget, args.planner, args.configuration)
        records = coarse_to_fine_predict(coarse, model, inputs, args.out, args.coarse_spacing_factor, args.margin_mm,
                                         args.folds, device, args.console, mirroring=args.mirroring)
    else:
        with dask_client(args.scheduler, args.workers, device) as client:
            records = predict_folds_on(client, model, inputs, args.out, args.folds, device, args.save_probabilities,
                                       args.mirroring, progress=args.console)
    print(f"predicted {len(records)} case(s) into {args.out}")
    return 0
