"""``workspace``, ``pipeline`` and ``selftrain``: the whole method over a workspace."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_uda.cli.options import (
    NON_NEGATIVE,
    OUTPUT_FOLDER,
    VARIANT_LIST,
    add_json,
    add_pipeline_run,
    add_target_modality,
    add_workspace,
)
from napari_uda.core.choices import BASE_STAGES, Budget

if TYPE_CHECKING:
    from napari_uda.pipeline.transfer import TransferFrom
    from napari_uda.pipeline.workflow import FilterSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("workspace", help="show a workspace's manifest: data, translators, models, rounds, review")
    add_workspace(p)
    add_json(p)
    p.set_defaults(func=cmd_workspace_show)

    p = sub.add_parser("pipeline", help="translate, segment, score, accept, self-train, predict: the whole method")
    p.add_argument("--source-images", required=True, type=Path, help="labelled CT volumes")
    p.add_argument("--source-labels", required=True, type=Path, help="their organ labels (same file names)")
    p.add_argument("--target-images", required=True, type=Path, help="unlabelled target scans")
    add_target_modality(p)
    add_workspace(p, kind=OUTPUT_FOLDER)
    add_pipeline_run(p)
    p.add_argument("--variant", default=None, choices=list(BASE_STAGES),
                   help="the pipeline's translator (default: organ-attention, or the first of --pool-variants)")
    p.add_argument("--pool-variants", type=VARIANT_LIST, default=None, metavar="V1,V2",
                   help="multi-view pooling (TANQ): one segmenter trained on the translations of these translators")
    p.add_argument("--rounds", type=NON_NEGATIVE, default=1, help="self-training rounds (0: none)")
    p.add_argument("--ablation", action="store_true",
                   help="also the strong source-only baseline (no_adaptation) and the other translators")
    p.add_argument("--ablation-variants", type=VARIANT_LIST, default=None, metavar="V1,V2",
                   help=f"the other translators --ablation trains, of {', '.join(BASE_STAGES)} (default: every one)")
    p.add_argument("--no-real-ct", action="store_true",
                   help="train the segmenters on translated CT only (default: translated + real CT, FLARE 2025's RCT+FI)")
    p.add_argument("--no-intensity-aug", action="store_true",
                   help="strong intensity augmentation for the source-only baseline only (default: every segmenter)")
    p.add_argument("--no-finetune", action="store_true",
                   help="train each self-training round from scratch (default: fine-tune the previous stage's folds, "
                        "as FLARE 2025)")
    p.add_argument("--eval-labels", type=Path, default=None,
                   help="target labels for evaluation only: score every stage and print the table")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("selftrain", help="self-training rounds on a workspace the pipeline has scored")
    add_workspace(p)
    p.add_argument("--rounds", type=NON_NEGATIVE, required=True, help="run rounds until this many exist")
    add_pipeline_run(p)
    p.set_defaults(func=cmd_selftrain)


def cmd_workspace_show(args: argparse.Namespace) -> int:
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

    return FilterSettings(top_k=args.top_k, rule=args.select or budget.accept_rule)


def _transfer(args: argparse.Namespace) -> TransferFrom | None:
    """The label transfer the options ask for: from --transfer-from, off with --no-transfer, None: as recorded."""
    from napari_uda.pipeline.transfer import TransferFrom

    if args.no_transfer:
        return TransferFrom(None)
    if args.transfer_from is None:
        return None
    return TransferFrom(str(args.transfer_from.absolute()), args.pair_by, args.patient)


def cmd_selftrain(args: argparse.Namespace) -> int:
    from napari_uda.cluster.engine import dask_client
    from napari_uda.core.choices import get_budget
    from napari_uda.core.device import pick_device
    from napari_uda.core.workspace import Workspace
    from napari_uda.pipeline.workflow import describe_uncertainty, self_train

    ws = Workspace.open(args.workspace)
    budget, device = get_budget(args.budget), str(pick_device(args.device))
    with dask_client(args.scheduler, args.workers, device) as client:
        done = self_train(ws, args.rounds, budget, args.auto_accept, device, _acceptance(args, budget), args.console,
                          client=client, tta=args.tta, coarse_to_fine=args.coarse_to_fine, margin_mm=args.margin_mm,
                          transfer=_transfer(args))
    for r in done:
        print(f"round {r['round']}: predictions in {ws.predictions_dir(r['stage'])}; "
              f"uncertainty across rounds: {describe_uncertainty(r['uncertainty'])}")
    if not done:
        print(f"{args.rounds} round(s) already done in {ws.root}")
    source = ws.pipeline().transfer_from
    if source is not None:
        print(f"the queue holds the labels of {source} transferred onto these scans: `napari-uda review queue "
              f"--workspace {ws.root}`")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from napari_uda.cluster.engine import dask_client
    from napari_uda.core.choices import get_budget
    from napari_uda.core.device import pick_device
    from napari_uda.core.workspace import Workspace
    from napari_uda.evaluate.evaluation import compare_markdown
    from napari_uda.pipeline.transfer import TransferFrom
    from napari_uda.pipeline.workflow import evaluate_stages, run_pipeline

    ws = Workspace.create(args.workspace, args.source_images, args.source_labels, args.target_images, args.modality)
    budget, device = get_budget(args.budget), str(pick_device(args.device))
    with dask_client(args.scheduler, args.workers, device) as client:
        variant = args.variant or (args.pool_variants[0] if args.pool_variants else "organ-attention")
        result = run_pipeline(ws, budget, variant, args.rounds, args.auto_accept, args.ablation, device,
                              _acceptance(args, budget), args.console, real_ct=not args.no_real_ct,
                              intensity_aug=not args.no_intensity_aug, finetune=not args.no_finetune, client=client,
                              ablation_variants=args.ablation_variants, pool_variants=args.pool_variants,
                              tta=bool(args.tta), coarse_to_fine=bool(args.coarse_to_fine), margin_mm=args.margin_mm,
                              transfer=_transfer(args) or TransferFrom(None))
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
