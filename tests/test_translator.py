"""Translators: reference defaults, learning, attention, safe loading, geometry, resume and kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY_TRANSLATOR as TINY, translator_phantom

from napari_uda.core.device import pick_device
from napari_uda.core.errors import UdaError
from napari_uda.core.io import read_volume
from napari_uda.core.jobs import Cancelled, Event
from napari_uda.translate.nets import PatchDiscriminator, ResnetGenerator, sobel
from napari_uda.translate.training import ImagePool, lr_factor, train_translator
from napari_uda.translate.translator import TranslatorConfig, fuse, load_translator, translate_volume


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return translator_phantom(tmp_path_factory.mktemp("phantom"), seed=21)


def test_reference_defaults():
    cfg = TranslatorConfig("T2WI")
    assert (cfg.size, cfg.ngf, cfg.ndf, cfg.n_blocks, cfg.d_layers) == (256, 64, 64, 9, 3)
    assert (cfg.lambda_cycle, cfg.lambda_identity * cfg.lambda_cycle, cfg.pool_size) == (10.0, 5.0, 50)
    assert (cfg.lr, cfg.beta1) == (2e-4, 0.5)
    assert (cfg.lambda_local, cfg.lambda_seg, cfg.fusion, cfg.variant) == (0.5, 5.0, "additive", "organ-attention")
    g = ResnetGenerator()
    assert sum(isinstance(m, torch.nn.Module) and type(m).__name__ == "ResnetBlock" for m in g.modules()) == 9
    assert g(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    d = PatchDiscriminator()
    # the 70x70 PatchGAN maps 256x256 to a 30x30 grid of patch scores
    assert d(torch.zeros(1, 1, 256, 256)).shape == (1, 1, 30, 30)
    assert lr_factor(0, cfg) == 1.0 and lr_factor(999, cfg) == 1.0
    assert lr_factor(1500, cfg) == pytest.approx(0.5) and lr_factor(2000, cfg) == 0.0


def test_config_validation():
    with pytest.raises(UdaError, match="unknown variant"):
        TranslatorConfig("T2WI", variant="pix2pix")
    with pytest.raises(UdaError, match="not CT"):
        TranslatorConfig("CT")
    with pytest.raises(UdaError, match="unknown modality"):
        TranslatorConfig("xray")


def test_fusions_pool_sobel():
    img, att = torch.full((1, 1, 4, 4), 0.5), torch.full((1, 1, 4, 4), 0.25)
    assert torch.allclose(fuse(img, att, "additive"), torch.full_like(img, 0.75))
    assert torch.allclose(fuse(img, att, "multiplicative"), torch.full_like(img, 0.625))
    assert fuse(img, att, "concat").shape == (1, 2, 4, 4)
    pool = ImagePool(2, torch.Generator().manual_seed(0))
    a = pool.query(torch.ones(3, 1, 2, 2))
    assert a.shape == (3, 1, 2, 2) and len(pool.images) == 2
    assert ImagePool(0, torch.Generator()).query(img) is img
    flat = sobel(torch.zeros(1, 1, 8, 8))
    assert torch.allclose(flat, torch.full_like(flat, -1.0), atol=1e-3)
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    assert sobel(step)[0, 0, 4, 3] > -0.5 > sobel(step)[0, 0, 4, 0]  # edge bright, flat region at -1


def test_asit_generators_see_sobel_maps_and_learn_with_identity_loss(data, tmp_path):
    """ASIT: both domains' training crops are the Sobel maps of the crops the bank samples, every
    loss (adversarial, cycle, identity) is computed there, finite, and cycle and identity fall."""
    from napari_uda.translate.training import TranslatorTrainer

    cfg = TranslatorConfig("T2WI", variant="asit", iterations=100, checkpoint_every=1000, batch_size=2, **TINY)
    trainer = TranslatorTrainer(cfg, data["ct"], None, data["t2"], tmp_path)
    state = trainer.gen.get_state()
    raw, _ = trainer.bank_b.sample(cfg.batch_size, cfg.size, trainer.gen)
    trainer.gen.set_state(state)
    torch.testing.assert_close(trainer._batch(trainer.bank_b)[0], sobel(raw))
    hist = []
    trainer.run(progress=hist.append)
    losses = [e.data["losses"] for e in hist]
    assert {"identity", "cycle", "G_adv", "D_A", "D_B"} <= set(losses[0])
    assert all(np.isfinite(v) for step in losses for v in step.values())
    for term in ("cycle", "identity"):
        curve = [step[term] for step in losses]
        assert np.mean(curve[-20:]) < 0.8 * np.mean(curve[:10]), term


def test_asit_translates_the_ct_sobel_map_and_sobel_volume_is_its_target_twin(data, tmp_path):
    """At inference ASIT's generator reads the CT's Sobel map (the translation is G(sobel(CT)) in
    [-1, 1]); the real targets' Sobel maps (what its segmenter reads) are computed the same way
    from the target's normalised intensities, with the target's geometry."""
    from napari_uda.core.intensity import CT_WINDOW, intensity_window, to_unit_range
    from napari_uda.core.modalities import get_modality
    from napari_uda.core.orientation import to_canonical
    from napari_uda.translate.translator import sobel_volume

    cfg = TranslatorConfig("T2WI", variant="asit", iterations=2, checkpoint_every=1000, **TINY)
    train_translator(cfg, data["ct"][:1], None, data["t2"], tmp_path)  # the working pixel size: this CT's
    tr = load_translator(tmp_path)
    ct = read_volume(data["ct"][0])
    assert tr.config.spacing_mm == pytest.approx(float(np.mean(ct.spacing[1:])))  # the phantoms' pixels: no resampling
    translated, attention = translate_volume(tr, ct)
    x = torch.from_numpy(to_unit_range(to_canonical(ct).array.astype(np.float32), CT_WINDOW))[:, None]
    with torch.no_grad():  # slices are axial slices of the canonical orientation
        by_hand = tr.generator(sobel(x))[:, 0].numpy()
    assert attention is None and translated.geometry == ct.geometry
    np.testing.assert_allclose(to_canonical(translated).array, by_hand, atol=1e-5)
    mri = read_volume(data["t2"][0], "T2WI")
    a = to_canonical(mri).array.astype(np.float32)
    unit = torch.from_numpy(to_unit_range(a, intensity_window(a, get_modality("T2WI"))))[:, None]
    own = float(np.mean(to_canonical(mri).spacing[1:]))  # at its own pixel size: nothing to resample
    edges = sobel_volume(mri, "T2WI", own)
    assert edges.geometry == mri.geometry and edges.array.dtype == np.float32
    np.testing.assert_allclose(to_canonical(edges).array, sobel(unit)[:, 0].numpy(), atol=1e-6)
    coarse = sobel_volume(mri, "T2WI", 2 * own)  # at twice the pixel size, then back onto the scan's grid
    assert coarse.geometry == mri.geometry and not np.allclose(coarse.array, edges.array)
    flat = sobel_volume(mri.with_array(np.zeros_like(mri.array)), "T2WI", tr.config.spacing_mm).array
    assert np.allclose(flat, -1.0, atol=1e-3)  # no edge anywhere: the bottom of Sobel space


def test_the_old_sobel_variant_is_refused_in_one_line():
    with pytest.raises(UdaError, match="replaced by 'asit'"):
        TranslatorConfig("T2WI", variant="sobel")


def test_losses_fall(data, tmp_path):
    cfg = TranslatorConfig("T2WI", variant="cyclegan", iterations=120, checkpoint_every=1000, batch_size=2, **TINY)
    hist = []
    train_translator(cfg, data["ct"], None, data["t2"], tmp_path, progress=hist.append)
    cycle = [e.data["losses"]["cycle"] for e in hist]
    assert np.mean(cycle[-20:]) < 0.7 * np.mean(cycle[:10])


def test_attention_is_high_inside_organs(data, tmp_path):
    cfg = TranslatorConfig("T2WI", variant="organ-attention", s_regime="pretrained", s_pretrain_iterations=300,
                           iterations=2, batch_size=4, checkpoint_every=1000, **{**TINY, "size": 40})
    train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path)
    tr = load_translator(tmp_path)
    ct, labels = read_volume(data["ct"][0]), read_volume(data["labels"][0])
    _, att = translate_volume(tr, ct)
    a = att.array
    assert a.min() >= 0.0 and a.max() <= 1.0
    inside, outside = a[labels.array > 0].mean(), a[labels.array == 0].mean()
    assert inside > 0.5 and inside > outside + 0.3, (inside, outside)


def test_mixed_precision_training_with_previews(data, tmp_path, monkeypatch):
    """A GPU trains under bfloat16 autocast: its previews run S on a bf16 translation (this broke)."""
    import napari_uda.translate.training as training

    monkeypatch.setattr(training, "amp_dtype", lambda device: torch.bfloat16)  # what a bf16 GPU gets
    cfg = TranslatorConfig("T2WI", variant="organ-attention", iterations=2, checkpoint_every=1000,
                           **{**TINY, "preview_every": 1})
    events = []
    train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path, progress=events.append)
    previews = [e.data["preview"] for e in events if "preview" in e.data]
    assert len(previews) == 2
    for path in previews:  # one slice's CT, translation and attention, written beside the translator
        with np.load(path) as z:
            assert set(z.files) == {"ct", "translated", "attention"}
            assert all(z[k].dtype == np.float32 and z[k].shape == (TINY["size"],) * 2 and np.isfinite(z[k]).all()
                       for k in z.files)


@pytest.mark.parametrize("variant", ["organ-attention", "asit", "tanq"])
def test_reload_identical_and_geometry(data, tmp_path, variant):
    cfg = TranslatorConfig("C+V", variant=variant, iterations=4, checkpoint_every=1000, seg_head=variant == "organ-attention",
                           skips=variant == "asit", **TINY)
    train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path)
    ct = read_volume(data["ct"][1])
    a1, att1 = translate_volume(load_translator(tmp_path), ct)
    a2, att2 = translate_volume(load_translator(tmp_path), ct)
    np.testing.assert_array_equal(a1.array, a2.array)
    assert a1.geometry == ct.geometry and a1.shape == ct.shape and a1.modality == "C+V"
    sidecar = json.loads((tmp_path / "translator.json").read_text())
    assert sidecar["modality"] == "C+V" and sidecar["variant"] == variant
    assert sidecar["intensity"]["source"]["window"] == [-600.0, 600.0]
    lo, hi = sidecar["intensity"]["output_window"]
    assert (lo, hi) == (-1.0, 1.0) if variant == "asit" else 0 <= lo < hi  # a Sobel-space translation stays there
    assert lo - 1e-3 <= a1.array.min() and a1.array.max() <= hi + 1e-3
    assert (att1 is None) == (variant != "organ-attention")
    assert sidecar["training"]["spacing_mm"] == pytest.approx(float(np.mean(ct.spacing[1:])), rel=0.2)
    if variant == "organ-attention":  # how well S finds organs is reported, on CT and on translated CT
        assert set(sidecar["training"]["s_dice"]) == {"ct", "translated_ct"}
    if variant == "tanq":  # how well its segmentation decoder finds the organs it gives unlabelled CT
        assert 0.0 <= sidecar["training"]["seg_decoder_dice"] <= 1.0


def test_generator_skips_add_no_weights_but_change_the_output():
    torch.manual_seed(0)
    plain, skips = ResnetGenerator(1, 1, 8, 2), ResnetGenerator(1, 1, 8, 2, skips=True)
    skips.load_state_dict(plain.state_dict())  # same names and shapes: nothing new to learn or store
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    stem, down1 = plain.features[:4], plain.features[4:7]
    f0 = stem(x)
    f1 = down1(f0)
    by_hand = plain.to_image(plain.features[-3:](plain.features[-6:-3](plain.features[7:-6](f1)) + f1) + f0)
    torch.testing.assert_close(skips(x), by_hand)
    assert not torch.allclose(skips(x), plain(x))


def test_a_sidecar_from_before_skips_still_loads(data, tmp_path):
    cfg = TranslatorConfig("T2WI", variant="cyclegan", iterations=1, checkpoint_every=1000, **TINY)
    train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path)
    sidecar = json.loads((tmp_path / "translator.json").read_text())
    del sidecar["architecture"]["skips"], sidecar["training"]["skips"]
    (tmp_path / "translator.json").write_text(json.dumps(sidecar))
    assert load_translator(tmp_path).generator.skips is False


def test_translation_does_not_depend_on_the_stored_orientation(data, tmp_path):
    from test_orientation import ras_copy

    cfg = TranslatorConfig("T2WI", variant="organ-attention", iterations=3, checkpoint_every=1000, **TINY)
    train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path)
    tr, ct = load_translator(tmp_path), read_volume(data["ct"][0])
    (a, att_a), (b, att_b) = translate_volume(tr, ct), translate_volume(tr, ras_copy(ct))
    assert b.geometry == ras_copy(ct).geometry
    np.testing.assert_allclose(b.array[:, ::-1, ::-1], a.array, atol=1e-4)
    np.testing.assert_allclose(att_b.array[:, ::-1, ::-1], att_a.array, atol=1e-5)


def test_bad_checkpoints_are_clear_errors(data, tmp_path):
    cfg = TranslatorConfig("T2WI", variant="cyclegan", iterations=2, **TINY)
    train_translator(cfg, data["ct"], None, data["t2"], tmp_path)
    sidecar = json.loads((tmp_path / "translator.json").read_text())
    sidecar["training"]["ngf"] = 16
    sidecar["architecture"]["ngf"] = 16
    (tmp_path / "translator.json").write_text(json.dumps(sidecar))
    with pytest.raises(UdaError, match="translator.safetensors: weights do not fit"):
        load_translator(tmp_path)
    (tmp_path / "translator.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UdaError, match="translator.safetensors: corrupt"):
        load_translator(tmp_path)
    (tmp_path / "translator.json").write_text("{not json")
    with pytest.raises(UdaError, match="translator.json: not valid JSON"):
        load_translator(tmp_path)
    with pytest.raises(UdaError, match="missing"):
        load_translator(tmp_path / "nowhere")


@pytest.mark.parametrize("variant", ["organ-attention", "asit", "tanq", "dar"])
def test_resume_continues_iteration_count(data, tmp_path, variant):
    cfg = TranslatorConfig("T2WI", variant=variant, iterations=12, checkpoint_every=100, **TINY)
    first = []
    with pytest.raises(Cancelled, match="cancelled at iteration 7; its checkpoint is in"):
        train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path, progress=first.append,
                         should_stop=lambda: len(first) >= 7)
    assert first[-1].message == "cancelled" and first[-1].done == 7
    second = []
    train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path, progress=second.append)
    iters = [e.done for e in second if "losses" in e.data]
    assert iters[0] == 8 and iters[-1] == 12
    assert json.loads((tmp_path / "translator.json").read_text())["training"]["iterations_done"] == 12


def test_killed_process_resumes_from_last_checkpoint(data, tmp_path):
    out = tmp_path / "tr"
    cmd = [sys.executable, "-m", "napari_uda.cli", "translate", "train", "--ct-images", str(data["ct"][0].parent),
           "--ct-labels", str(data["labels"][0].parent), "--target-images", str(data["t2"][0].parent),
           "--modality", "T2WI", "--out", str(out), "--iterations", "400", "--size", "32", "--ngf", "8", "--ndf", "8",
           "--blocks", "2", "--checkpoint-every", "5", "--preview-every", "0", "--identity", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "progress.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if log.exists() and sum(1 for _ in open(log)) >= 13:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "train_state.pt").exists()
    def iterations() -> list[int]:
        out = []
        for line in open(log):
            event = Event.from_json(line)
            if event is not None:  # not a line cut by the kill
                out.append(event.done)
        return out

    before = iterations()
    killed_at = max(before)
    saved = torch.load(out / "train_state.pt", weights_only=True)["iteration"]
    assert 5 <= saved <= killed_at and saved % 5 == 0
    res = subprocess.run(cmd[:cmd.index("400")] + ["20"] + cmd[cmd.index("400") + 1:], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    after = iterations()[len(before):]
    assert after[0] == saved + 1 and after == list(range(saved + 1, 21))
    training = json.loads((out / "translator.json").read_text())["training"]
    assert training["lambda_identity"] == 0.0 and "identity" not in Event.from_json(log.read_text().splitlines()[-1]).data["losses"]


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UdaError, match="CUDA was requested but no CUDA GPU"):
            pick_device("cuda")
    with pytest.raises(UdaError, match="unknown device"):
        pick_device("tpu-9")


def test_autocast_forward_computes_in_low_precision_and_returns_float32(monkeypatch):
    from napari_uda.core.device import autocast_forward, cpu_autocast_dtype

    conv = torch.nn.Conv2d(2, 3, 3)
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    net = torch.nn.Sequential(conv)
    net.forward = autocast_forward(net.forward, "cpu", torch.bfloat16)
    x = torch.randn(1, 2, 8, 8)
    y = net(x)
    assert seen == [torch.bfloat16] and y.dtype == torch.float32
    assert torch.allclose(y, torch.nn.functional.conv2d(x, conv.weight, conv.bias), atol=0.1)
    two = autocast_forward(lambda t: [conv(t), conv(t)], "cpu", torch.bfloat16)(x)  # deep supervision's list
    assert isinstance(two, list) and [t.dtype for t in two] == [torch.float32] * 2
    assert set(net.state_dict()) == {"0.weight", "0.bias"}  # the weights' names are untouched
    monkeypatch.setenv("NAPARI_UDA_CPU_AMP", "0")
    assert cpu_autocast_dtype() is None


def test_randomise_contrast_moves_organs_not_labels():
    from napari_uda.translate.training import randomise_contrast

    torch.manual_seed(0)
    ct = torch.full((1, 1, 8, 8), -0.5)
    ct[..., 2:6, 2:6] = 0.2
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6] = 1
    outs = [randomise_contrast(ct, labels, p=1.0) for _ in range(40)]
    assert torch.equal(ct[..., 3, 3], torch.tensor([[0.2]]))  # the input is left alone
    assert all(o.shape == ct.shape and o.min() >= -1 and o.max() <= 1 for o in outs)
    organ = torch.stack([o[0, 0, 3:5, 3:5].mean() for o in outs])
    assert organ.std() > 0.2  # the organ's brightness is random from draw to draw


def test_invariant_s_is_pretrained_and_frozen(data, tmp_path):
    cfg = TranslatorConfig("T2WI", variant="organ-attention", s_regime="invariant", s_pretrain_iterations=3,
                           iterations=3, checkpoint_every=1000, **TINY)
    events = []
    train_translator(cfg, data["ct"], data["labels"], data["t2"], tmp_path, progress=events.append)
    assert [e.task for e in events if e.task != "translator organ-attention"] == ["pretraining S"]
    assert "G_seg" in events[-1].data["losses"] and "S" not in events[-1].data["losses"]  # G learns through S; S is not trained
    _, att = translate_volume(load_translator(tmp_path), read_volume(data["ct"][0]))
    assert np.isfinite(att.array).all()
