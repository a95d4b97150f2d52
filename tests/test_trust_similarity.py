"""Similarity of relevance maps: Spearman, SSIM (any dims, as scikit-image computes it) and top-k overlap."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segxai.core.trust.similarity import SSIM_K1, abs_spearman, map_ssim, spearman, ssim, top_k_overlap


def test_identical_maps_are_perfectly_similar():
    a = np.random.default_rng(0).normal(size=(2, 12, 12, 12))
    assert spearman(a, a) == pytest.approx(1.0)
    assert map_ssim(a, a) == pytest.approx(1.0)
    assert ssim(a[0], a[0]) == pytest.approx(1.0)
    assert top_k_overlap(a, a, 50) == 1.0


def test_spearman_is_a_rank_measure_and_abs_spearman_ignores_sign():
    a = np.random.default_rng(1).normal(size=500)
    assert spearman(a, np.exp(3 * a)) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert abs_spearman(a, -a) == pytest.approx(1.0)
    assert np.isnan(spearman(a, np.ones_like(a)))
    b = np.random.default_rng(2).normal(size=500)
    assert abs(spearman(a, b)) < 0.15


def test_ssim_of_two_constant_images_is_the_luminance_term():
    a, b = np.full((9, 9, 9), 0.2), np.full((9, 9, 9), 0.7)
    c1 = (SSIM_K1 * 1.0) ** 2
    expected = (2 * 0.2 * 0.7 + c1) / (0.2**2 + 0.7**2 + c1)  # no variance: the contrast-structure term is C2 / C2
    assert ssim(a, b, data_range=1.0) == pytest.approx(expected, rel=1e-12)


def test_ssim_of_a_negated_pattern_is_negative():
    a = np.random.default_rng(3).uniform(size=(16, 16))
    assert ssim(a, 1.0 - a, data_range=1.0) < -0.5   # same brightness, opposite structure


@pytest.mark.parametrize("shape", [(24, 20), (16, 14, 12)])
@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_matches_scikit_image(shape, gaussian):
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(4)
    a = rng.uniform(size=shape)
    b = np.clip(a + rng.normal(0, 0.2, shape), 0, 1)
    if gaussian:
        expected = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False)
    else:
        expected = metrics.structural_similarity(a, b, data_range=1.0, win_size=7)
    assert ssim(a, b, data_range=1.0, gaussian=gaussian) == pytest.approx(expected, rel=1e-9)


def test_top_k_overlap_counts_shared_voxels_summed_over_channels():
    a = np.zeros((2, 4, 4, 4))
    b = np.zeros((2, 4, 4, 4))
    a[0, 0, 0, :] = [4, 3, 2, 1]            # top-4 of a: (0,0,0..3)
    b[1, 0, 0, :2] = [-5, -4]                # sign ignored, channels summed
    b[0, 3, 3, 2:] = [9, 8]
    assert top_k_overlap(a, b, 4) == pytest.approx(0.5)
    assert top_k_overlap(a, b, 2) == 0.0    # a's top 2: (0,0,0), (0,0,1); b's: (3,3,2), (3,3,3)
    with pytest.raises(ValueError, match="k must be"):
        top_k_overlap(a, b, 0)


def test_ranks_average_ties_as_scipy_does():
    stats = pytest.importorskip("scipy.stats")
    from napari_segxai.core.trust.similarity import rank_correlation, ranks

    values = np.random.default_rng(5).integers(0, 30, 2000).astype(float)
    values[:300] = 0.0                                   # many ties, as zeros outside the brain
    np.testing.assert_allclose(ranks(values), stats.rankdata(values))
    assert spearman(values, values**3) == pytest.approx(1.0)
    other = np.random.default_rng(6).normal(size=values.shape)
    assert rank_correlation(ranks(values), other) == pytest.approx(stats.spearmanr(values, other)[0], rel=1e-12)


def test_summarise_groups_rows_with_mean_and_spread():
    from napari_segxai.core.trust.groundtruth import PrecisionRow
    from napari_segxai.core.trust.tables import summarise

    rows = [PrecisionRow("saliency", "trained", "edema", 10, p, 1.0) for p in (0.2, 0.4, float("nan"))]
    rows.append(PrecisionRow("sobel", "input edges", "edema", 10, 0.1, 0.5))
    summary = {(s.group, s.measure): s for s in summarise(rows, ("method", "class_name"), ("precision",))}
    row = summary[("saliency / edema", "precision")]
    assert row.mean == pytest.approx(0.3) and row.sd == pytest.approx(np.std([0.2, 0.4], ddof=1)) and row.n == 2
    assert summary[("sobel / edema", "precision")].n == 1 and np.isnan(summary[("sobel / edema", "precision")].sd)


def test_the_similarity_registry_drives_the_randomisation_rows_and_the_case_table(monkeypatch):
    from _trust import unet_problem
    from napari_segxai.core.trust import case_measures, randomisation_test, similarity_names
    from napari_segxai.core.trust import similarity as similarity_module
    from napari_segxai.core.trust.similarity import SimilarityMeasure, register_similarity

    assert similarity_names() == ("spearman", "ssim", "top_k")
    monkeypatch.setattr(similarity_module, "_SIMILARITIES", dict(similarity_module._SIMILARITIES))  # undone after

    @register_similarity
    class SignAgreement(SimilarityMeasure):
        """A toy measure: the share of voxels whose relevance has the reference's sign."""

        name, label, help = "sign", "sign agreement", "share of voxels with the same sign"

        def compare(self, prepared, relevance, k_voxels):
            return float((np.sign(prepared) == np.sign(relevance)).mean())

    with pytest.raises(ValueError, match="unique name"):
        register_similarity(SignAgreement)
    assert "randomisation_sign" in case_measures()
    result = randomisation_test(unet_problem(), ["saliency"], modes=("cascading",), max_steps=1)
    assert all(0 <= row.sign <= 1 for row in result.rows)
    assert all(row.sign == 1.0 for row in result.rows if row.mode == "none")
    assert all("sign" in verdict.values for verdict in result.verdicts())
