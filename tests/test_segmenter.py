"""nnU-Net v2 for real on the phantom: export, plan, train two folds (tiny budget), predict, score."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import Planted

from napari_uda.core.child import run_child
from napari_uda.core.errors import UdaError
from napari_uda.core.files import list_volumes, pair_labels
from napari_uda.core.io import Geometry, Volume, read_volume, write_volume
from napari_uda.core.jobs import Event
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.pseudo.consistency import fold_consistency
from napari_uda.segment.prediction import predict_folds
from napari_uda.segment.probabilities import ProbabilityFile
from napari_uda.segment.segmenter import NnunetFolders, export_dataset, plan_and_preprocess, train_folds

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data = root / "phantom"
    write_phantom_dataset(data, {"ct": 5, "t2wi": 2}, seed=8, shape=(24, 48, 48))
    ws = root / "workspace"
    images = list_volumes(data / "ct/images")
    raw = export_dataset(ws, 7, "PhantomCT", images, pair_labels(images, data / "ct/labels"), "CT")
    plan_and_preprocess(ws, 7)
    events = []
    model = train_folds(ws, 7, [0, 1], "tiny", device="cpu", progress=events.append)
    return {"ws": ws, "data": data, "raw": raw, "model": model, "events": events}


def test_export_layout(trained):
    raw = trained["raw"]
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"]["liver"] == 1 and meta["numTraining"] == 5
    assert sorted(p.name for p in (raw / "imagesTr").iterdir())[0] == "ct_000_0000.nii.gz"
    assert (raw / "labelsTr" / "ct_000.nii.gz").exists()
    assert (trained["ws"] / "nnunet/preprocessed/Dataset007_PhantomCT/nnUNetResEncUNetMPlans.json").exists()


def test_two_folds_trained_with_progress(trained):
    for fold in (0, 1):
        assert (trained["model"] / f"fold_{fold}" / "checkpoint_final.pth").exists()
    events = trained["events"]
    epochs = [(e.data["fold"], e.data["epoch"]) for e in events if "epoch" in e.data]
    assert epochs == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for fold in (0, 1):  # one count per fold over all its epochs' iterations, ending at its total
        counts = [(e.done, e.total) for e in events if e.task == f"fold {fold}"]
        assert [d for d, _ in counts] == sorted(d for d, _ in counts) and counts[-1][0] == counts[-1][1] > 1
        assert all(e.unit == "iterations" for e in events)
    # a finished fold is not trained again
    again = []
    train_folds(trained["ws"], 7, [0], "tiny", progress=again.append)
    assert again == [Event("fold 0", "already trained")]


def test_fine_tuning_starts_from_the_given_folds(trained):
    """A -ft budget loads the previous model's fold weights: after its few low-rate steps the
    network is still near them, while a fold trained from scratch is far away."""
    from safetensors.torch import load_file

    with pytest.raises(UdaError, match="need the model to start from"):
        train_folds(trained["ws"], 7, [0], "tiny-ft", device="cpu")
    with pytest.raises(UdaError, match="fold_3/model.safetensors: missing"):
        train_folds(trained["ws"], 7, [3], "tiny-ft", device="cpu", init_from=trained["model"])
    tuned = train_folds(trained["ws"], 7, [0], "tiny-ft", device="cpu", init_from=trained["model"])
    assert tuned != trained["model"]

    def weights(model, fold):
        return load_file(str(model / f"fold_{fold}" / "model.safetensors"))

    start, after, other = weights(trained["model"], 0), weights(tuned, 0), weights(trained["model"], 1)
    moved = sum(float((after[k] - start[k]).abs().sum()) for k in start)
    apart = sum(float((other[k] - start[k]).abs().sum()) for k in start)
    assert 0 < moved < 0.1 * apart
    assert json.loads((tuned / "fold_0/model.json").read_text())["trainer"] == "nnUNetTrainer_UDA_tiny_ft"


def test_predict_every_fold(trained, tmp_path):
    inputs = list_volumes(trained["data"] / "t2wi/images")
    records = predict_folds(trained["model"], inputs, tmp_path, device="cpu")
    assert [r["case"] for r in records] == ["t2wi_000", "t2wi_001"]
    for path in inputs:
        src = read_volume(path)
        fold_labels = []
        for fold in (0, 1):
            with ProbabilityFile(tmp_path / f"fold_{fold}" / f"{path.name.split('.')[0]}.npz") as pf:
                probs = pf.read_all()
                assert pf.geometry == src.geometry
            assert probs.shape == (14, *src.shape)
            np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-2)  # float16 on disk
            lab = read_volume(tmp_path / f"fold_{fold}" / path.name)
            assert lab.geometry.matches(src.geometry) and lab.shape == src.shape
            fold_labels.append(lab.array)
        fused = read_volume(tmp_path / path.name)
        assert fused.geometry.matches(src.geometry)
        scores = fold_consistency(fold_labels)
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    rec = records[0]["folds"]["0"]
    assert rec["seconds"] > 0 and rec["gpu_peak_mb"] is None


def test_prediction_does_not_depend_on_the_stored_orientation(trained, tmp_path):
    """The same scan stored LPS and RAS gets the same segmentation, mirrored back onto each file's axes."""
    from test_orientation import ras_copy

    src = read_volume(list_volumes(trained["data"] / "t2wi/images")[0])
    ras = write_volume(ras_copy(src), tmp_path / "in" / "ras.nii.gz")
    lps = write_volume(src, tmp_path / "in" / "lps.nii.gz")
    predict_folds(trained["model"], [lps, ras], tmp_path / "out", [0], device="cpu")
    a, b = read_volume(tmp_path / "out/fold_0/lps.nii.gz"), read_volume(tmp_path / "out/fold_0/ras.nii.gz")
    assert b.geometry.matches(read_volume(ras).geometry)
    np.testing.assert_array_equal(b.array[:, ::-1, ::-1], a.array)  # 100% agreement once mirrored back
    with ProbabilityFile(tmp_path / "out/fold_0/lps.npz") as pa, ProbabilityFile(tmp_path / "out/fold_0/ras.npz") as pb:
        np.testing.assert_allclose(pb.read_all()[:, :, ::-1, ::-1].astype(np.float32), pa.read_all().astype(np.float32),
                                   atol=1e-3)


def test_test_time_mirroring_makes_a_mirrored_scan_predict_mirrored_exactly(trained, tmp_path):
    """A ``-mirror`` fold allows nnU-Net's mirror axes; with test-time mirroring a mirrored scan's
    probabilities and labels are the scan's, mirrored, bit for bit; without it they are not
    (nnU-Net's own per-tile mirroring was not exact either: up to 0.16, benchmarks/RESULTS.md)."""
    model = train_folds(trained["ws"], 7, [0], "tiny-mirror")
    axes = json.loads((model / "fold_0" / "model.json").read_text())["inference_allowed_mirroring_axes"]
    assert axes and set(axes) >= {0, 1}
    src = read_volume(list_volumes(trained["data"] / "t2wi/images")[0])
    flipped = Volume(np.ascontiguousarray(src.array[:, ::-1, :]), src.geometry)  # mirrored anatomy, same geometry
    inputs = [write_volume(src, tmp_path / "in/a.nii.gz"), write_volume(flipped, tmp_path / "in/b.nii.gz")]

    def both(mirroring: bool) -> tuple[np.ndarray, ...]:
        out = tmp_path / f"mirroring_{mirroring}"
        predict_folds(model, inputs, out, [0], device="cpu", mirroring=mirroring)
        with ProbabilityFile(out / "fold_0/a.npz") as pa, ProbabilityFile(out / "fold_0/b.npz") as pb:
            probs = pa.read_all(), pb.read_all()[:, :, ::-1, :]
        return *probs, read_volume(out / "fold_0/a.nii.gz").array, read_volume(out / "fold_0/b.nii.gz").array[:, ::-1, :]

    pa, pb, la, lb = both(True)
    np.testing.assert_array_equal(pb, pa)
    np.testing.assert_array_equal(lb, la)
    pa, pb, la, lb = both(False)
    assert np.abs(pb.astype(np.float32) - pa).max() > 1e-2 and (lb != la).any()


def test_every_segmenter_budget_names_a_trainer():
    """Each budget key (``<budget>[-aug][-mirror][-ft]``, composed by ``Budget.segmenter_budget``)
    names a trainer class nnU-Net can find."""
    from napari_uda.core.choices import BUDGETS, SEGMENTER_BUDGETS
    from napari_uda.segment.nnunet_trainers import uda_trainers

    for key, cls in SEGMENTER_BUDGETS.items():
        assert isinstance(getattr(uda_trainers, cls, None), type), key
    for budget in BUDGETS.values():
        for flags in [(a, m, f) for a in (False, True) for m in (False, True) for f in (False, True)]:
            key = budget.segmenter_budget(*flags)
            assert key in SEGMENTER_BUDGETS, key
    small = BUDGETS["small"]
    assert small.segmenter_budget(True, True, True) == "small-aug-mirror-ft"
    assert small.segmenter_budget(False, False, False) == "small"


def test_prediction_never_unpickles_a_fold(trained, tmp_path):
    import pickle

    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    marker = tmp_path / "pwned"
    for fold in (0, 1):
        assert (model / f"fold_{fold}" / "model.safetensors").exists()
        sidecar = json.loads((model / f"fold_{fold}" / "model.json").read_text())
        assert sidecar["trainer"] == "nnUNetTrainer_UDA_tiny" and sidecar["fold"] == fold
        for name in ("checkpoint_final.pth", "checkpoint_best.pth", "evil.pkl"):
            (model / f"fold_{fold}" / name).write_bytes(pickle.dumps(Planted(marker)))
    inputs = list_volumes(trained["data"] / "t2wi/images")[:1]
    predict_folds(model, inputs, tmp_path / "a", device="cpu")
    predict_folds(trained["model"], inputs, tmp_path / "b", device="cpu")
    assert not marker.exists()
    np.testing.assert_array_equal(read_volume(tmp_path / "a" / inputs[0].name).array,
                                  read_volume(tmp_path / "b" / inputs[0].name).array)


def test_damaged_fold_weights_are_one_clear_error(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    weights = model / "fold_0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    inputs = list_volumes(trained["data"] / "t2wi/images")[:1]
    with pytest.raises(UdaError, match="fold_0/model.safetensors: corrupt"):
        predict_folds(model, inputs, tmp_path / "out", [0], device="cpu")
    weights.unlink()
    with pytest.raises(UdaError, match="model.safetensors: missing.*checkpoint_final.pth: pickles"):
        predict_folds(model, inputs, tmp_path / "out", [0], device="cpu")
    assert predict_folds(model, inputs, tmp_path / "out2", None, device="cpu")[0]["folds"].keys() == {"1"}


def test_model_for_other_channels_is_refused(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    meta = json.loads((model / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (model / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UdaError, match="expects 2 input channels"):
        predict_folds(model, list_volumes(trained["data"] / "t2wi/images")[:1], tmp_path / "out")


def test_export_bad_input(tmp_path):
    img = Volume(np.zeros((4, 8, 8), np.int16), Geometry((2, 1, 1)))
    lab = Volume(np.zeros((4, 8, 8), np.uint8), Geometry((2, 1, 1.5)))
    write_volume(img, tmp_path / "i" / "case1.nii.gz")
    write_volume(lab, tmp_path / "l" / "case1.nii.gz")
    with pytest.raises(UdaError, match="case1.nii.gz: geometry does not match"):
        export_dataset(tmp_path / "ws", 1, "X", [tmp_path / "i/case1.nii.gz"], [tmp_path / "l/case1.nii.gz"], "CT")
    write_volume(Volume(np.full((4, 8, 8), 20, np.uint8), Geometry((2, 1, 1))), tmp_path / "l" / "case1.nii.gz")
    with pytest.raises(UdaError, match="case1.nii.gz: label values outside the organ table"):
        export_dataset(tmp_path / "ws", 1, "X", [tmp_path / "i/case1.nii.gz"], [tmp_path / "l/case1.nii.gz"], "CT")
    write_volume(img, tmp_path / "i" / "case2.nii.gz")
    with pytest.raises(UdaError, match="no labels for case2.nii.gz"):
        pair_labels(list_volumes(tmp_path / "i"), tmp_path / "l")
    with pytest.raises(UdaError, match="no dataset 003"):
        NnunetFolders(tmp_path / "ws").dataset_dir(3)


def test_damaged_resume_checkpoint_is_named(trained, tmp_path):
    """A checkpoint_latest.pth cut short by a kill: one error naming it and what to do, before nnU-Net starts."""
    fold = trained["model"].parent / "nnUNetTrainer_UDA_small__nnUNetResEncUNetMPlans__3d_fullres" / "fold_3"
    fold.mkdir(parents=True)
    good = trained["model"] / "fold_0" / "checkpoint_final.pth"
    (fold / "checkpoint_latest.pth").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(UdaError, match="fold_3/checkpoint_latest.pth: damaged checkpoint .* continue from checkpoint_best.pth"):
        train_folds(trained["ws"], 7, [3], "small", device="cpu")
    shutil.rmtree(fold)


def test_training_before_planning_says_what_to_run(tmp_path, caplog):
    img = Volume(np.zeros((4, 8, 8), np.int16), Geometry((2, 1, 1)))
    write_volume(img, tmp_path / "i" / "case1.nii.gz")
    write_volume(img.with_array(np.zeros((4, 8, 8), np.uint8)), tmp_path / "l" / "case1.nii.gz")
    export_dataset(tmp_path / "ws", 1, "X", [tmp_path / "i/case1.nii.gz"], [tmp_path / "l/case1.nii.gz"], "CT")
    assert "case1.nii.gz: the image is constant" in caplog.text and "case1.nii.gz: no organ is labelled" in caplog.text
    with pytest.raises(UdaError, match="nnUNetResEncUNetMPlans.json: missing; plan dataset 1 first: napari-uda segment plan"):
        train_folds(tmp_path / "ws", 1, [0], "tiny", device="cpu")
    assert not (tmp_path / "ws" / "nnunet" / "results").exists() or not any((tmp_path / "ws" / "nnunet" / "results").iterdir())


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", "", "x" * 101])
def test_export_refuses_names_that_are_paths(tmp_path, name):
    """A dataset name never becomes a path outside nnunet/raw, and nothing there is deleted."""
    img = Volume(np.zeros((4, 8, 8), np.int16), Geometry((2, 1, 1)))
    write_volume(img, tmp_path / "i" / "case1.nii.gz")
    write_volume(img.with_array(np.zeros((4, 8, 8), np.uint8)), tmp_path / "l" / "case1.nii.gz")
    bystander = tmp_path / "escape"
    bystander.mkdir()
    (bystander / "keep.txt").write_text("mine")
    with pytest.raises(UdaError, match="dataset name .* is not a plain name"):
        export_dataset(tmp_path / "ws" / "w", 1, name, [tmp_path / "i/case1.nii.gz"], [tmp_path / "l/case1.nii.gz"], "CT")
    assert (bystander / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escape", "i", "l"]  # nothing written anywhere


def test_cancel_terminates_the_process_group(tmp_path):
    """Cancel kills the child and what it started: neither lives to write its marker file."""
    started, survived = tmp_path / "started", tmp_path / "survived"
    child = (f"import pathlib,subprocess,time; subprocess.Popen(['sh','-c','sleep 60; touch {survived}']); "
             f"pathlib.Path({str(started)!r}).touch(); time.sleep(60); pathlib.Path({str(survived)!r}).touch()")
    with pytest.raises(UdaError, match="cancelled"):
        run_child([sys.executable, "-c", child], {}, tmp_path / "log.txt", should_stop=started.exists)
    left = subprocess.run(["pgrep", "-f", f"sleep 60; touch {survived}"], capture_output=True, text=True).stdout.split()
    assert not left and not survived.exists()


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_cli_leaves_no_trainer(trained, sig):
    """Killing `segment train` (SIGKILL: no cleanup can run in it; SIGTERM: `timeout`, a scheduler)
    takes nnU-Net's trainer and everything it started with it."""
    import signal

    import psutil

    cmd = [sys.executable, "-m", "napari_uda.cli", "segment", "train", "--workspace", str(trained["ws"]), "--dataset", "7",
           "--folds", "4", "--budget", "small", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent, trainers = psutil.Process(proc.pid), []
    deadline = time.time() + 120
    while time.time() < deadline and not trainers:
        trainers = [p for p in parent.children(recursive=True) if "napari_uda.segment.nnunet_train" in " ".join(p.cmdline())]
        time.sleep(0.2)
    assert trainers, "the trainer never started"
    group = [p for p in psutil.process_iter() if p.pid != proc.pid and _pgid(p.pid) == trainers[0].pid]
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(group + trainers, timeout=30)
    assert not alive, f"left running after {sig}: {[p.cmdline() for p in alive]}"


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_killed_training_resumes(trained):
    """SIGKILL nnU-Net's training process after its first epoch; the same command resumes it."""
    import os
    import signal

    ws = trained["ws"]
    progress = ws / "logs" / "train_007_tiny.jsonl"
    cmd = [sys.executable, "-m", "napari_uda.cli", "segment", "train", "--workspace", str(ws), "--dataset", "7",
           "--folds", "2", "--budget", "tiny", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def fold2_epochs() -> list[int]:
        if not progress.exists():
            return []
        events = [Event.from_json(line) for line in progress.read_text().splitlines()]
        return [e.data["epoch"] for e in events if e.data.get("fold") == 2 and "epoch" in e.data]

    deadline = time.time() + 300
    while time.time() < deadline and fold2_epochs() != [1]:
        time.sleep(0.2)
    assert fold2_epochs() == [1]
    child = subprocess.run(["pgrep", "-f", "napari_uda.segment.nnunet_train 7 3d_fullres 2"], capture_output=True, text=True).stdout.split()
    assert child
    for pid in child:
        os.kill(int(pid), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "napari-uda: error: nnU-Net training of fold 2 failed (exit -9)" in err
    assert not (trained["model"] / "fold_2" / "checkpoint_final.pth").exists()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert fold2_epochs() == [1, 2]  # epoch 1 was not trained again
    assert (trained["model"] / "fold_2" / "checkpoint_final.pth").exists()


def test_a_fold_stopped_before_its_weights_were_written_gets_them_on_rerun(trained, tmp_path):
    """nnU-Net writes its final checkpoint before the trainer writes the safetensors weights; a fold
    stopped between the two is not skipped as finished: the rerun trains no more and writes them."""
    import torch

    weights = trained["model"] / "fold_0" / "model.safetensors"
    original = tmp_path / "model.safetensors"
    shutil.move(weights, original)
    progress = trained["ws"] / "logs" / "train_007_tiny.jsonl"
    before = progress.read_text().count('"epoch"')
    train_folds(trained["ws"], 7, [0], "tiny", device="cpu")
    from safetensors.torch import load_file

    again, first = load_file(weights), load_file(original)
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)  # the same trained network, from the final checkpoint
    assert progress.read_text().count('"epoch"') == before  # no epoch trained again


def test_predict_in_region_pastes_back(trained, tmp_path):
    """The fine stage: predict inside a region (here from the ground truth) and paste back."""
    from napari_uda.core.roi import foreground_box
    from napari_uda.segment.segmenter import predict_in_regions

    image = list_volumes(trained["data"] / "ct/images")[4]
    src, gt = read_volume(image), read_volume(trained["data"] / "ct/labels" / image.name)
    box = foreground_box(gt, src, margin_mm=10.0)
    records = predict_in_regions(trained["model"], [image], {"ct_004": box}, tmp_path, folds=[0])
    outside = np.ones(src.shape, bool)
    outside[box] = False
    assert outside.any() and records[0]["roi"] == [[b.start, b.stop] for b in box]
    labels, fused = read_volume(tmp_path / "fold_0" / image.name), read_volume(tmp_path / image.name)
    assert labels.geometry.matches(src.geometry) and labels.shape == src.shape == fused.shape
    assert not labels.array[outside].any() and not fused.array[outside].any()
    with ProbabilityFile(tmp_path / "fold_0" / "ct_004.npz") as pf:
        probs = pf.read_all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-2)
    assert (probs[0][outside] == 1).all()


def test_fine_training_data_are_organ_crops_with_the_margin_that_paste_back_exactly(tmp_path):
    """Coarse-to-fine's fine model trains on each case cropped to its organs plus the margin (whole
    voxels, rounded up, clipped to the scan); the crop pasted back is the case, voxel for voxel,
    and a case without organs stays whole."""
    from napari_uda.core.orientation import read_canonical
    from napari_uda.core.roi import paste

    write_phantom_dataset(tmp_path / "data", {"ct": 2}, seed=5, shape=(20, 40, 40))
    images = list_volumes(tmp_path / "data/ct/images")
    labels = pair_labels(images, tmp_path / "data/ct/labels")
    empty = read_volume(labels[1])
    write_volume(Volume(np.zeros_like(empty.array), empty.geometry), labels[1])
    raw = export_dataset(tmp_path / "ws", 9, "Crops", images, labels, "CT", crop_margin_mm=6.0)
    for image, label, whole in zip(images, labels, (False, True)):
        img, lab = read_canonical(image, label)
        case = image.name.removesuffix(".nii.gz")
        part, part_lab = read_volume(raw / f"imagesTr/{case}_0000.nii.gz"), read_volume(raw / f"labelsTr/{case}.nii.gz")
        if whole:
            assert part.shape == img.shape and np.array_equal(part.array, img.array)
            continue
        fg = np.argwhere(lab.array > 0)
        pad = np.ceil(6.0 / np.asarray(lab.spacing)).astype(int)
        start, stop = np.maximum(fg.min(0) - pad, 0), np.minimum(fg.max(0) + 1 + pad, lab.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        assert part.shape == tuple(stop - start) and part.shape != img.shape
        np.testing.assert_array_equal(part.array, img.array[box])
        np.testing.assert_array_equal(part_lab.array, lab.array[box])
        assert np.array_equal(paste(part_lab.array, box, lab.shape), lab.array)  # every organ voxel is inside
        assert part.geometry.spacing == img.geometry.spacing and part.geometry.direction == img.geometry.direction
        corner = np.asarray(img.geometry.origin) + img.geometry.direction_matrix @ (start * np.asarray(img.spacing))
        np.testing.assert_allclose(part.geometry.origin, corner, atol=1e-4)


def test_a_channels_last_network_with_shared_tensors_saves_and_loads(tmp_path):
    """The trainers run 2d networks channels-last on CPU; nnU-Net's networks share modules."""
    import torch
    from safetensors.torch import load_model

    from napari_uda.segment.nnunet_model import FOLD_WEIGHTS, save_fold_model

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        m = torch.nn.Module()
        m.encoder = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.Conv2d(4, 4, 3))
        m.decoder = torch.nn.Module()
        m.decoder.encoder = m.encoder  # as nnU-Net's decoder holds its encoder
        return m

    trained = net().to(memory_format=torch.channels_last)
    save_fold_model(trained, tmp_path, "T", "2d", 0, None)
    loaded = net()
    for p in loaded.parameters():
        torch.nn.init.zeros_(p)
    load_model(loaded, str(tmp_path / FOLD_WEIGHTS), strict=False)
    assert all(torch.equal(a, b) for a, b in zip(loaded.encoder.parameters(), trained.encoder.parameters()))


def test_folds_train_in_parallel_on_a_cluster_and_stop_when_asked(trained):
    """Two folds as tasks of a LocalCluster of 2 worker processes: a stop reaches the nnU-Net
    processes on the workers (not only the tasks), and the next run resumes and finishes both."""
    from napari_uda.cluster.engine import dask_client
    from napari_uda.cluster.train import train_folds_on
    from napari_uda.core.jobs import Cancelled

    ws, model = trained["ws"], trained["model"]

    def trainers() -> list[str]:
        return subprocess.run(["pgrep", "-f", "napari_uda.segment.nnunet_train 7 3d_fullres [34]"], capture_output=True,
                              text=True).stdout.split()

    with dask_client("local", 2) as client:
        seen: list[Event] = []
        with pytest.raises(Cancelled, match="cancelled"):
            train_folds_on(client, ws, 7, [3, 4], "tiny", progress=seen.append, should_stop=lambda: bool(seen))
        deadline = time.time() + 60
        while trainers() and time.time() < deadline:
            time.sleep(0.2)
        assert not trainers(), "a fold kept training after the stop"
        events: list[Event] = []
        assert train_folds_on(client, ws, 7, [3, 4], "tiny", progress=events.append) == model
    assert all((model / f"fold_{f}" / "model.safetensors").exists() for f in (3, 4))
    finished = {e.data["fold"] for e in events if "epoch" in e.data and e.data["epoch"] == e.data["num_epochs"]}
    assert finished == {3, 4} and [e.done for e in events if e.task == "train"] == [1, 2]
