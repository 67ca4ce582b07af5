"""``translate train`` and ``translate apply``: CT-to-MRI/PET translators."""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_uda.cli.options import COUNT, NON_NEGATIVE, OUTPUT_FOLDER, add_device, add_target_modality, bounded
from napari_uda.core.choices import FUSIONS, S_REGIMES, VARIANTS


def register(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("translate", help="train or apply CT-to-MRI/PET translators").add_subparsers(
        dest="translate_command", required=True, metavar="ACTION")

    p = tp.add_parser("train", help="train (or resume) a translator for one target modality")
    p.add_argument("--ct-images", required=True, type=Path)
    p.add_argument("--ct-labels", type=Path, help="CT organ labels (same file names); needed for organ attention and tanq")
    p.add_argument("--target-images", required=True, type=Path, help="unpaired target-modality volumes")
    add_target_modality(p)
    p.add_argument("--variant", default="organ-attention", choices=VARIANTS)
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER)
    p.add_argument("--iterations", type=COUNT, default=2000)
    p.add_argument("--size", type=bounded(int, 16, 4096), default=256, help="in-plane training size in pixels")
    add_device(p)
    p.add_argument("--ngf", type=COUNT, default=64)
    p.add_argument("--ndf", type=COUNT, default=64)
    p.add_argument("--blocks", type=COUNT, default=9, help="residual blocks in the generator")
    p.add_argument("--batch", type=COUNT, default=1)
    p.add_argument("--identity", type=bounded(float, 0.0), default=0.5,
                   help="identity-loss weight (the reference CycleGAN's 0.5; 0 leaves it out: benchmarks/RESULTS.md)")
    p.add_argument("--fusion", default="additive", choices=FUSIONS)
    p.add_argument("--s-regime", default="joint", choices=S_REGIMES)
    p.add_argument("--seg-head", action="store_true", help="segmentation head on the generator (FLARE 2025)")
    p.add_argument("--skips", action="store_true", help="encoder-decoder skips in the generators (benchmarks/RESULTS.md)")
    p.add_argument("--checkpoint-every", type=NON_NEGATIVE, default=100)
    p.add_argument("--preview-every", type=NON_NEGATIVE, default=50)
    p.add_argument("--progress-jsonl", type=Path, default=None, help="progress events (default OUT/progress.jsonl)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = tp.add_parser("apply", help="translate CT volumes with a trained translator")
    p.add_argument("--translator", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="a CT volume or a folder of them")
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER)
    p.add_argument("--attention-out", type=OUTPUT_FOLDER, default=None)
    p.add_argument("--ct-labels", type=Path, default=None,
                   help="the CTs' organ labels (same file names): a tanq translator's regions (default: its decoder's)")
    add_device(p)
    p.set_defaults(func=cmd_apply)


def cmd_train(args: argparse.Namespace) -> int:
    import signal

    from napari_uda.core.files import list_volumes, pair_labels
    from napari_uda.core.jobs import EventLog, tee
    from napari_uda.translate.training import train_translator
    from napari_uda.translate.translator import TranslatorConfig

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
    log = EventLog((out / "progress.jsonl") if args.progress_jsonl is None else args.progress_jsonl)
    train_translator(cfg, ct, labels, targets, out, device=args.device, progress=tee(log, args.console),
                     should_stop=lambda: stop["flag"])
    print(f"translator written to {out}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from napari_uda.core.files import pair_labels, stem_of, styled_stem, volume_inputs
    from napari_uda.core.io import read_volume, write_volume
    from napari_uda.core.jobs import Event
    from napari_uda.translate.translator import load_translator, translate_styles, translate_volume

    tr = load_translator(args.translator, device=args.device)
    inputs = volume_inputs(args.input)
    labels = pair_labels(inputs, args.ct_labels) if args.ct_labels else [None] * len(inputs)
    for i, (path, label) in enumerate(zip(inputs, labels)):
        regions, ct, case = read_volume(label) if label is not None else None, read_volume(path, "CT"), stem_of(path)
        if tr.config.disentangled:  # DAR: one translation per target style cluster
            for k, styled in enumerate(translate_styles(tr, ct, case)):
                write_volume(styled, Path(args.out) / f"{styled_stem(case, k)}.nii.gz")
            attention = None
        else:
            translated, attention = translate_volume(tr, ct, labels=regions)
            write_volume(translated, Path(args.out) / f"{case}.nii.gz")
        if args.attention_out and attention is not None:
            write_volume(attention, Path(args.attention_out) / f"{case}.nii.gz")
        args.console(Event("translate", f"{path.name} -> {tr.modality}", i + 1, len(inputs), "volumes"))
    print(f"translated {len(inputs)} volume(s) into {args.out}")
    return 0
