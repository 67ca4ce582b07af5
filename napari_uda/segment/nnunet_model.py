"""nnU-Net folds as safetensors + a JSON sidecar, loaded without unpickling anything.

Each fold folder of a model trained by the project's trainers holds ``model.safetensors`` (the
network's weights) and ``model.json`` (what it is: trainer, configuration, fold, mirroring axes,
versions), next to nnU-Net's own ``plans.json`` and ``dataset.json`` one folder up. Prediction
builds the network from the plans and loads the weights from safetensors: nnU-Net's
``checkpoint_final.pth`` is a pickle and is never opened here.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from napari_uda.core.errors import UdaError
from napari_uda.core.files import atomic_path, atomic_write_text, read_json

FOLD_WEIGHTS = "model.safetensors"


FOLD_SIDECAR = "model.json"


FORMAT = "napari-uda-nnunet-fold"


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside DDP's and ``torch.compile``'s wrappers (whose weights are saved and loaded)."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)


def save_fold_model(network: torch.nn.Module, fold_dir: str | Path, trainer: str, configuration: str, fold: int | str,
                    mirror_axes: tuple[int, ...] | None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``network``'s weights and the sidecar into ``fold_dir`` (each written, then renamed into
    place). A channels-last network is first put back in the standard layout (safetensors cannot
    check its shared tensors otherwise)."""
    from safetensors.torch import save_model

    from napari_uda import __version__

    fold_dir = Path(fold_dir)
    network.to(memory_format=torch.contiguous_format)
    with atomic_path(fold_dir / FOLD_WEIGHTS) as tmp:
        save_model(network, str(tmp), metadata={"format": FORMAT})  # nnU-Net's networks share tensors between modules
    sidecar = {"format": FORMAT, "trainer": trainer, "configuration": configuration, "fold": fold,
               "inference_allowed_mirroring_axes": list(mirror_axes) if mirror_axes is not None else None,
               "plans": "../plans.json", "dataset": "../dataset.json",
               "versions": {"napari_uda": __version__, "torch": torch.__version__, "python": platform.python_version()},
               **(extra or {})}
    atomic_write_text(fold_dir / FOLD_SIDECAR, json.dumps(sidecar, indent=2))
    return fold_dir / FOLD_WEIGHTS


def trained_folds(model_dir: str | Path) -> list[int]:
    """The numbered folds of ``model_dir`` that hold safe weights (nnU-Net's ``fold_all`` is not a fold)."""
    return sorted(int(p.name[5:]) for p in Path(model_dir).glob("fold_*")
                  if p.name[5:].isdigit() and (p / FOLD_WEIGHTS).exists())


def pickle_hint(folder: Path, pattern: str = "*.pth") -> str:
    """`` (it holds a.pth, ...: pickles, which napari-uda never opens)`` for the pickles under
    ``folder`` matching ``pattern``; empty when there are none."""
    pickles = sorted(str(p.relative_to(folder)) for p in folder.glob(pattern))
    return f" (it holds {', '.join(pickles)}: pickles, which napari-uda never opens)" if pickles else ""


def _no_safe_weights(fold_dir: Path, fold: int) -> UdaError:
    return UdaError(f"{fold_dir / FOLD_WEIGHTS}: missing; fold {fold} has no safe weights to predict with"
                    + pickle_hint(fold_dir))


def check_fold(model_dir: str | Path, fold: int) -> None:
    """Fail early, naming the file, when fold ``fold`` of ``model_dir`` lacks its sidecar or its
    weights file is not a complete safetensors file (header and data length; nothing is loaded)."""
    from safetensors import SafetensorError, safe_open

    fold_dir = Path(model_dir) / f"fold_{fold}"
    if not (fold_dir / FOLD_WEIGHTS).exists():
        raise _no_safe_weights(fold_dir, fold)
    read_json(fold_dir / FOLD_SIDECAR)
    try:
        with safe_open(str(fold_dir / FOLD_WEIGHTS), "pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise UdaError(f"{fold_dir / FOLD_WEIGHTS}: corrupt or not a safetensors file ({exc})") from None


def load_fold(model_dir: str | Path, fold: int) -> dict[str, Any]:
    """Everything nnU-Net's predictor needs for one fold, built without unpickling: ``network`` (from
    the plans, weights loaded), ``plans_manager``, ``configuration_manager``, ``dataset_json``,
    ``trainer``, ``mirror_axes``. Errors name the file."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    model_dir = Path(model_dir)
    fold_dir = model_dir / f"fold_{fold}"
    weights = fold_dir / FOLD_WEIGHTS
    if not weights.exists():
        raise _no_safe_weights(fold_dir, fold)
    sidecar = read_json(fold_dir / FOLD_SIDECAR)
    if sidecar.get("format") != FORMAT:
        raise UdaError(f"{fold_dir / FOLD_SIDECAR}: not a napari-uda nnU-Net fold sidecar")
    plans, dataset_json = read_json(model_dir / "plans.json"), read_json(model_dir / "dataset.json")
    try:
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(sidecar["configuration"])
        n_in = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
        n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, n_in, n_out,
                                                           enable_deep_supervision=False)
    except (KeyError, TypeError, ValueError) as exc:
        raise UdaError(f"{model_dir / 'plans.json'}: cannot build the network of configuration "
                       f"{sidecar.get('configuration')!r} ({exc})") from None
    try:
        load_model(network, str(weights), strict=True, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UdaError(f"{weights}: corrupt or not a safetensors file ({exc})") from None
    except RuntimeError as exc:
        raise UdaError(f"{weights}: does not fit the network of {model_dir / 'plans.json'} "
                       f"({str(exc).strip().splitlines()[0]})") from None
    state = network.state_dict()
    axes = sidecar.get("inference_allowed_mirroring_axes")
    return {"network": network, "state": state, "plans_manager": plans_manager,
            "configuration_manager": configuration_manager, "dataset_json": dataset_json,
            "trainer": sidecar["trainer"], "mirror_axes": tuple(axes) if axes is not None else None}
