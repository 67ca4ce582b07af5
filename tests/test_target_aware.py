"""TANQ: region-wise and region-aware adaptive normalisation against hand-computed values, its
generator and segmentation decoder, training, translation by a CT's labels, and the pipeline's
multi-view pooling choices."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_TRANSLATOR as TINY, translator_phantom
from torch.nn import functional as F

from napari_uda.core.errors import UdaError
from napari_uda.core.intensity import CT_WINDOW, from_unit_range, to_unit_range
from napari_uda.core.io import Volume, read_volume
from napari_uda.core.orientation import to_canonical
from napari_uda.translate.target_aware import RegionAdaIN, TargetAwareGenerator, region_normalise, region_weights
from napari_uda.translate.training import TranslatorTrainer, train_translator
from napari_uda.translate.translator import TranslatorConfig, load_translator, translate_volume


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return translator_phantom(tmp_path_factory.mktemp("phantom"), seed=23)


def test_region_normalisation_by_hand():
    """Values 1, 3 in region 0 and 10, 20, 30 in region 1: each region minus its own mean over its
    own standard deviation; the region-aware affine then scales and shifts each by its class's."""
    x = torch.tensor([1.0, 3.0, 10.0, 20.0, 30.0]).reshape(1, 1, 1, 5)
    labels = torch.tensor([[[0, 0, 1, 1, 1]]])
    s1 = math.sqrt(200.0 / 3.0)
    expected = torch.tensor([-1.0, 1.0, -10.0 / s1, 0.0, 10.0 / s1])
    got = region_normalise(x, region_weights(labels, (1, 5)))
    torch.testing.assert_close(got.flatten(), expected, atol=1e-4, rtol=1e-4)
    norm = RegionAdaIN(1)
    with torch.no_grad():
        norm.gamma[:2, 0] = torch.tensor([2.0, -1.0])
        norm.beta[:2, 0] = torch.tensor([0.5, 3.0])
    torch.testing.assert_close(norm(x, labels).flatten(), torch.tensor(
        [-1.5, 2.5, 3.0 + 10.0 / s1, 3.0, 3.0 - 10.0 / s1]), atol=1e-4, rtol=1e-4)


def test_one_region_is_instance_norm_and_memberships_sum_to_one():
    f = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(region_normalise(f, torch.ones(2, 1, 8, 8)), F.instance_norm(f), atol=1e-5, rtol=1e-4)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2, :2], labels[0, 2, 2] = 2, 5
    w = region_weights(labels, (2, 2))
    torch.testing.assert_close(w.sum(1), torch.ones(1, 2, 2))
    assert w[0, 2, 0, 0] == 1.0 and w[0, 5, 1, 1] == 0.25 and w[0, 0, 1, 1] == 0.75


def test_generator_regions_come_from_labels_or_its_segmentation_decoder():
    torch.manual_seed(0)
    g = TargetAwareGenerator(1, 1, 8, 2).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:20, 6:18] = 1
    with torch.no_grad():
        torch.testing.assert_close(g.encode(x, torch.zeros_like(labels)), g.encode(x, None), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g(x), g.translate(x, g.segment(x).argmax(1)))
        image, logits = g.forward_with_seg(x, labels)
        assert image.shape == (2, 1, 32, 32) and logits.shape == (2, 14, 32, 32)
        torch.testing.assert_close(image, g.translate(x, labels))
        assert not torch.allclose(image, g.translate(x, torch.zeros_like(labels)), atol=1e-3)


def test_tanq_needs_ct_labels_and_no_other_head():
    with pytest.raises(UdaError, match="tanq has its own generator"):
        TranslatorConfig("T2WI", variant="tanq", seg_head=True)


def test_tanq_trains_with_the_ct_labels_and_its_losses_fall(data, tmp_path):
    """The generator gets each CT crop's own label map; adversarial, cycle, identity and the
    segmentation decoder's cross-entropy are finite, and cycle, identity and cross-entropy fall."""
    cfg = TranslatorConfig("T2WI", variant="tanq", iterations=100, checkpoint_every=1000, batch_size=2, **TINY)
    with pytest.raises(UdaError, match="tanq variant needs CT labels"):
        TranslatorTrainer(cfg, data["ct"], None, data["t2"], tmp_path)
    trainer = TranslatorTrainer(cfg, data["ct"], data["labels"], data["t2"], tmp_path)
    seen: list[torch.Tensor] = []
    translate = trainer.nets.G_AB.translate
    trainer.nets.G_AB.translate = lambda x, lab: seen.append(lab) or translate(x, lab)
    state = trainer.gen.get_state()
    real_a, lab_a = trainer._batch(trainer.bank_a)
    real_b, _ = trainer._batch(trainer.bank_b)
    trainer.generator_step(real_a, lab_a, real_b, {})
    torch.testing.assert_close(seen[0], lab_a)  # CT -> target by the CT's own organs
    trainer.nets.G_AB.translate = translate
    trainer.gen.set_state(state)
    hist = []
    trainer.run(progress=hist.append)
    losses = [e.data["losses"] for e in hist]
    assert {"seg_decoder", "identity", "cycle", "G_adv", "D_A", "D_B"} <= set(losses[0])
    assert all(np.isfinite(v) for step in losses for v in step.values())
    for term in ("cycle", "identity", "seg_decoder"):
        curve = [step[term] for step in losses]
        assert np.mean(curve[-20:]) < 0.9 * np.mean(curve[:10]), term


def test_translate_volume_by_the_ct_labels_equals_the_generator_by_hand(data, tmp_path):
    cfg = TranslatorConfig("T2WI", variant="tanq", iterations=3, checkpoint_every=1000, **TINY)
    train_translator(cfg, data["ct"][:1], data["labels"][:1], data["t2"], tmp_path)  # working pixels: this CT's
    tr = load_translator(tmp_path)
    ct, organs = read_volume(data["ct"][0]), read_volume(data["labels"][0])
    translated, attention = translate_volume(tr, ct, labels=organs)
    assert attention is None and translated.geometry == ct.geometry and translated.shape == ct.shape
    canon_ct, canon_lab = to_canonical(ct), to_canonical(organs)
    k = canon_ct.shape[0] // 2
    x = torch.from_numpy(to_unit_range(canon_ct.array[k:k + 1].astype(np.float32), CT_WINDOW))[:, None]
    lab = torch.from_numpy(canon_lab.array[k:k + 1].astype(np.int64))
    with torch.no_grad():
        by_hand = from_unit_range(tr.generator(x, lab)[0, 0].numpy(), tr.output_window)
    np.testing.assert_allclose(to_canonical(translated).array[k], by_hand, rtol=1e-4, atol=1e-2)
    unlabelled, _ = translate_volume(tr, ct)  # the segmentation decoder's regions instead
    assert np.abs(unlabelled.array - translated.array).max() > 1e-2
    shifted = Volume(organs.array[:, :-1], organs.geometry, organs.modality)
    with pytest.raises(UdaError, match="must be on one grid"):
        translate_volume(tr, ct, labels=shifted)


def test_pooling_choices_are_checked_in_one_line(data, tmp_path):
    from napari_uda.core.choices import get_budget
    from napari_uda.core.workspace import Workspace
    from napari_uda.pipeline.workflow import run_pipeline, source_training_set

    ws = Workspace.create(tmp_path / "ws", data["ct"][0].parent, data["labels"][0].parent, data["t2"][0].parent, "T2WI")
    tiny = get_budget("tiny")
    for pool, variant, message in ((["tanq"], "tanq", "two or more"), (["cyclegan", "tanq"], "organ-attention", "two or more"),
                                   (["asit", "tanq"], "tanq", "Sobel-space"), (["tanq", "pix2pix"], "tanq", "pix2pix")):
        with pytest.raises(UdaError, match=message):
            run_pipeline(ws, tiny, variant, rounds=0, pool_variants=pool)
    assert ws.pipeline() is None  # nothing recorded for a refused run
    images, labels, names = source_training_set(ws, ["cyclegan", "tanq"], real_ct=True)
    stems = [p.name[:-7] for p in data["ct"]]
    assert names == [f"cyclegan_{s}" for s in stems] + [f"tanq_{s}" for s in stems] + [f"real_{s}" for s in stems]
    assert images[:len(stems)] == [ws.translated_dir("cyclegan") / p.name for p in data["ct"]]
    assert images[-len(stems):] == list(ws.files("source_images"))
    assert labels == list(ws.files("source_labels")) * 3
