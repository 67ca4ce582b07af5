"""The choices commands and widgets offer, as plain data: translator variants, training budgets,
nnU-Net planners, acceptance rules. Nothing here imports torch or numba, so ``napari-uda --help``
answers at once; the modules that act on a choice import it from here."""
from __future__ import annotations

from dataclasses import dataclass

from napari_uda.core.errors import UdaError

# --- translators (napari_uda.translate.translator) ----------------------------------------------------------------
#: ``asit``: Sobel-space translation (ASIT): translator and segmenter work on Sobel edge maps of CT and target;
#: ``tanq``: target-aware normalisation (TANQ): region-wise normalisation by the CT's organ masks in the generator;
#: ``dar``: DAR-UNet's content/style disentangled translation, each CT translated in one style per target style cluster
VARIANTS = ("cyclegan", "organ-attention", "asit", "tanq", "dar")
SOBEL_SPACE_VARIANTS = ("asit",)
TARGET_AWARE_VARIANTS = ("tanq",)
DISENTANGLED_VARIANTS = ("dar",)
FUSIONS = ("additive", "multiplicative", "concat")
S_REGIMES = ("joint", "pretrained", "invariant")

# --- nnU-Net (napari_uda.segment.segmenter) ---------------------------------------------------------------------
#: nnU-Net training budgets -> trainer class; ``<budget>-aug`` adds strong intensity augmentation
#: (the source-only baseline's), ``<budget>-ft`` fine-tunes a previous model's folds (``train_folds(init_from=)``),
#: see :mod:`napari_uda.segment.nnunet_trainers.uda_trainers`.
SEGMENTER_BUDGETS = {"tiny": "nnUNetTrainer_UDA_tiny", "small": "nnUNetTrainer_UDA_small", "full": "nnUNetTrainer_UDA_progress",
           "tiny-aug": "nnUNetTrainer_UDA_tiny_aug", "small-aug": "nnUNetTrainer_UDA_small_aug",
           "full-aug": "nnUNetTrainer_UDA_progress_aug"}
#: ``<budget>-mirror`` (tiny and small, whose trainers turn nnU-Net's mirroring off) trains with nnU-Net's mirroring
#: augmentation and allows test-time mirroring (the pipeline's ``--tta``)
SEGMENTER_BUDGETS |= {f"{budget}-mirror": f"{trainer}_mirror" for budget, trainer in SEGMENTER_BUDGETS.items()
                      if not budget.startswith("full")}
SEGMENTER_BUDGETS |= {f"{budget}-ft": f"{trainer}_ft" for budget, trainer in SEGMENTER_BUDGETS.items()}  # fine-tune a previous model


def pipeline_budget(segmenter_budget: str) -> str:
    """The pipeline budget a segmenter budget belongs to: ``small-aug-ft`` -> ``small``."""
    return segmenter_budget.split("-", 1)[0]


PLANNERS = {"resenc-m": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"), "default": ("ExperimentPlanner", "nnUNetPlans")}

# --- the pipeline (napari_uda.pipeline.workflow) -----------------------------------------------------------------
BASE_STAGES = {"cyclegan": "cyclegan", "organ-attention": "organ_attention", "asit": "asit", "tanq": "tanq",
               "dar": "dar"}  # translator variant -> stage
POOLED = "pooled"  # multi-view pooling (TANQ): one segmenter trained on the translations of several translators
#: how pseudo-labels are selected for self-training (``FilterSettings.rule``): ``filters`` (FLARE 2025), ``consistency``
#: (FLARE 2024), ``uncertainty`` (ASIT: the lowest uncertainty across rounds, their union as the pseudo-label)
ACCEPT_RULES = ("filters", "consistency", "uncertainty")
PAIRINGS = ("name", "volume")  # label transfer (ASIT): a target finds its patient's scan by name, or by volume matching
# coarse-to-fine (FLARE 2025): the coarse model trains at this multiple of the budget's spacing, the fine
# model on crops of the organs' region with a margin (mm; the paper gives none, 10 mm is our choice)
COARSE_SPACING_FACTOR = 2.0
CROP_MARGIN_MM = 10.0


@dataclass(frozen=True)
class Budget:
    """How much training one pipeline budget buys: translator iterations and size, the nnU-Net
    trainer (a key of :data:`SEGMENTER_BUDGETS`; the source-only baseline uses its
    ``-aug`` variant), the folds trained, the planner and the nnU-Net configuration.

    ``small`` is the CPU recipe found by measuring learning curves (``benchmarks/RESULTS.md``):
    nnU-Net's ``2d`` configuration with a small network (16 base features, 4 down-samplings, the
    ASIT paper's fast plan), batches of 8 and AdamW; the 3d plain U-Net at 250 SGD iterations
    learned the liver only. Its models are too weak for FLARE 2025's filters (checkpoint agreement
    0.35-0.45 where they ask 0.9: nothing passes), so the CPU budgets accept by fold consistency
    (FLARE 2024) unless asked otherwise."""

    name: str
    translator_iterations: int
    translator_size: int
    ngf: int
    ndf: int
    blocks: int
    nnunet: str
    folds: tuple[int, ...]
    planner: str
    spacing_factor: float = 1.0  # > 1: nnU-Net trains on a coarser copy (it predicts any input grid)
    configuration: str = "3d_fullres"
    base_features: int | None = None  # None: nnU-Net's plan; else a smaller network (segmenter.shrink_plans)
    max_stages: int | None = None
    accept_rule: str = "filters"  # automatic acceptance's default rule (FilterSettings.rule)
    mirrors: bool = False  # its trainer keeps nnU-Net's mirroring augmentation (else test-time mirroring needs -mirror)

    def segmenter_budget(self, augment: bool = False, tta: bool = False, fine_tune: bool = False) -> str:
        """The key of :data:`SEGMENTER_BUDGETS` a stage trains with: ``-aug`` strong intensity
        augmentation, ``-mirror`` mirroring augmentation where the budget's trainer lacks it and
        test-time mirroring is asked for, ``-ft`` fine-tuning a previous model."""
        return (self.nnunet + ("-aug" if augment else "") + ("-mirror" if tta and not self.mirrors else "")
                + ("-ft" if fine_tune else ""))


BUDGETS = {
    "tiny": Budget("tiny", 20, 32, 8, 8, 2, "tiny", (0, 1), "default", configuration="2d", base_features=8,
                   max_stages=4, accept_rule="consistency"),
    "small": Budget("small", 1500, 64, 32, 32, 6, "small", (0, 1), "default", configuration="2d", base_features=16,
                    max_stages=5, accept_rule="consistency"),
    "full": Budget("full", 50000, 256, 64, 64, 9, "full", (0, 1, 2, 3, 4), "resenc-m", mirrors=True),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise UdaError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
