"""TracIn exact engine: equal to captum TracInCP, per-class-pair split, results, missing training record."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from _influence import LRS, SEEDS, blob_case, toy_model
from napari_segxai.core.influence import (
    Evidence, InfluenceResult, NoTrainingRecord, influence, region_loss, training_case, training_record,
)
from napari_segxai.core.model.loading import load_model_card


@pytest.fixture(scope="module")
def cases_cache(tmp_path_factory):
    """Regenerated training cases go to a temporary folder shared by this module's tests."""
    folder = tmp_path_factory.mktemp("cases")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGXAI_TRAINING_CASES", str(folder))
        yield folder


@pytest.fixture
def card(tmp_path, cases_cache):
    return load_model_card(toy_model(tmp_path / "toy"))


@pytest.mark.parametrize("layers, last_k", [("last", 2), ("all", 2)], ids=["last-2", "all"])
def test_exact_engine_equals_captum_tracincp(card, layers, last_k):
    """Our exact engine against captum TracInCP (autograd path: its per-sample fast path has no Conv3d rule)."""
    from captum.influence import TracInCP

    from napari_segxai.core.influence.checkpoints import load_tracin_model
    from napari_segxai.core.influence.exact import training_example
    from napari_segxai.core.influence.gradients import RegionLoss
    from napari_segxai.core.influence.regions import prepare_example
    from napari_segxai.core.model.weights import load_state_dict

    case = blob_case()
    result = influence(case, card, engine="exact", layers=layers, last_k=last_k, threshold=0.3, scoring="raw")
    assert result.scores.shape == (3, len(SEEDS), 3) and np.abs(result.scores).max() > 0

    model = load_tracin_model(card, layers=layers, last_k=last_k)
    if layers == "all":
        assert model.parameters == sum(p.numel() for p in model.gradient_network.parameters())
    train = [training_example(model, s, [1, 2, 3], threshold=0.3) for s in SEEDS]
    dataset = [(ex.image[0], ex.targets[k]) for ex in train for k in range(3)]
    record = training_record(card)

    def load(net, path):
        net.load_state_dict(load_state_dict(path))
        return dict((str(c.path), c.lr) for c in record.checkpoints)[path]

    tracin = TracInCP(model.gradient_network, torch.utils.data.DataLoader(dataset, batch_size=1),
                      [str(c.path) for c in record.checkpoints], checkpoints_load_func=load,
                      layers=list(model.layer_names), loss_fn=RegionLoss(), batch_size=1,
                      sample_wise_grads_per_batch=False)
    test = prepare_example(case, card, model.network, [1, 2, 3], threshold=0.3)
    reference = tracin.influence((test.image.expand(3, *test.image.shape[1:]), test.targets)).detach().numpy()
    reference = reference.reshape(3, len(SEEDS), 3)
    np.testing.assert_allclose(result.scores, reference, rtol=1e-4, atol=1e-6 * np.abs(reference).max())


def test_class_pair_scores_split_the_whole_prediction_loss(card):
    """Region-size-weighted class losses add up to the loss over all confident voxels, so their scores do too."""
    from napari_segxai.core.influence.checkpoints import load_tracin_model
    from napari_segxai.core.influence.exact import tracin_scores, training_example
    from napari_segxai.core.influence.gradients import layer_parameters
    from napari_segxai.core.influence.regions import IGNORE, prepare_example

    case = blob_case()
    result = influence(case, card, engine="exact", layers="all", threshold=0.0, scoring="raw")
    model = load_tracin_model(card, layers="all")
    test = prepare_example(case, card, model.network, [1, 2, 3], threshold=0.0)
    union = test.targets.max(0).values.unsqueeze(0)  # every region's voxels with their own class as target
    assert (union != IGNORE).sum() == test.voxels.sum() > 0
    whole = []
    for state in model.states:
        model.gradient_network.load_state_dict(state)
        params = layer_parameters(model.gradient_network, model.layer_names)
        loss = region_loss(model.gradient_network(test.image), union)[0]
        whole.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    train = training_example(model, SEEDS[0], [1, 2, 3], threshold=0.0)
    whole_scores = tracin_scores(model.learning_rates, torch.stack(whole)[:, None], model.gradients(train))[0]
    weights = test.voxels / test.voxels.sum()
    np.testing.assert_allclose((weights[:, None] * result.scores[:, 0, :]).sum(0), whole_scores, rtol=1e-4, atol=1e-9)
    # and each class pair is its own number: rows differ when the test regions differ
    assert not np.allclose(result.scores[1], result.scores[2])


def test_renormalised_scores_are_the_published_formulas_in_both_engines(card):
    from napari_segxai.core.influence.checkpoints import load_tracin_model
    from napari_segxai.core.influence.exact import training_example
    from napari_segxai.core.influence.index import compress_rows
    from napari_segxai.core.influence.regions import prepare_example

    case = blob_case()
    model = load_tracin_model(card)
    test = model.gradients(prepare_example(case, card, model.network, [1, 2, 3], threshold=0.0)).double()
    trains = [model.gradients(training_example(model, seed, [1, 2, 3], threshold=0.0)).double() for seed in SEEDS]
    lrs = torch.tensor(LRS, dtype=torch.float64)

    def by_hand(scoring):  # (K_test, N, K_train), straight from the definitions, and each score's size
        out, size = np.zeros((3, len(SEEDS), 3)), np.zeros((3, len(SEEDS), 3))
        for n, train in enumerate(trains):
            for a in range(3):
                for b in range(3):
                    total = bound = 0.0
                    for t in range(len(LRS)):
                        g, h = test[t, a], train[t, b]
                        product, norms = float(g @ h), float(g.norm() * h.norm())
                        if scoring in ("cosine", "relative") and h.norm() > 0:
                            product, norms = product / float(h.norm()), norms / float(h.norm())
                        if scoring == "cosine" and g.norm() > 0:
                            product, norms = product / float(g.norm()), norms / float(g.norm())
                        total += float(lrs[t]) * product
                        bound += float(lrs[t]) * norms
                    out[a, n, b], size[a, n, b] = total, bound
        return out, size

    # the index stores gradient rows as float16: each entry rounded by at most 2^-11 of itself, so a product
    # g.h moves by at most 2^-11 |g| |h| (Cauchy-Schwarz), per side rounded; a score near zero by cancellation
    # can differ by more than a fixed share of itself (1.4% seen), never by more than this bound
    half = 2.0 ** -11
    for scoring in ("raw", "cosine", "relative"):
        expected, size = by_hand(scoring)
        exact = influence(case, card, engine="exact", threshold=0.0, scoring=scoring, model=model)
        indexed = influence(case, card, engine="indexed", threshold=0.0, scoring=scoring, model=model)
        np.testing.assert_allclose(exact.scores, expected, rtol=1e-5, atol=1e-12)
        assert np.all(np.abs(indexed.scores - expected) <= 2 * half * size + 1e-12), (scoring, indexed.scores - expected)
        assert exact.scoring == indexed.scoring == scoring and f"{scoring} scores" in exact.describe()
    # specific: the non-empty training regions' mean and strongest principal directions removed from
    # the query's and every training region's gradient (per checkpoint), then relative; computed here from the
    # training rows as the index stores them (float16), since removing directions can amplify their rounding
    trains = [torch.from_numpy(np.float64(r) * s[..., None]) for r, s in (compress_rows(t.numpy()) for t in trains)]
    voxels = np.stack([training_example(model, seed, [1, 2, 3], threshold=0.0).voxels for seed in SEEDS])
    expected = np.zeros((3, len(SEEDS), 3))
    for t in range(len(LRS)):
        rows = np.stack([trains[n][t, b].numpy() for n in range(len(SEEDS)) for b in range(3) if voxels[n, b] > 0])
        mean = rows.mean(0)
        r = min(12, len(rows) // 4)
        basis = np.linalg.svd(rows - mean)[2][:r]                      # (r, D), orthonormal rows

        def without(g):
            g = g.numpy() - mean
            return g - basis.T @ (basis @ g)

        for a in range(3):
            for n, train in enumerate(trains):
                for b in range(3):
                    if voxels[n, b] == 0:
                        continue                                     # a region without voxels scores 0
                    h = without(train[t, b])
                    expected[a, n, b] += LRS[t] * float(without(test[t, a]) @ h) / np.linalg.norm(h)
    specific = influence(case, card, engine="indexed", threshold=0.0, scoring="specific", model=model)
    np.testing.assert_allclose(specific.scores, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    with pytest.raises(ValueError, match="use the indexed engine"):
        influence(case, card, engine="exact", scoring="specific", model=model)
    cosine = influence(case, card, engine="exact", threshold=0.0, scoring="cosine", model=model).scores
    assert np.abs(cosine).max() <= sum(LRS) + 1e-9  # a sum of lr-weighted cosines
    with pytest.raises(ValueError, match="Unknown TracIn scoring 'gas'"):
        influence(case, card, scoring="gas")


def test_regions_follow_the_prediction_and_the_threshold(card):
    from napari_segxai.core.influence.checkpoints import load_tracin_model
    from napari_segxai.core.influence.regions import IGNORE, prepare_example
    from napari_segxai.core.model.inference import segment

    case = blob_case()
    model = load_tracin_model(card)
    loose = prepare_example(case, card, model.network, [1, 2, 3], threshold=0.0)
    strict = prepare_example(case, card, model.network, [1, 2, 3], threshold=0.45)
    labels = segment(case, card).labels
    for k, value in enumerate((1, 2, 4)):
        assert loose.voxels[k] == int((labels == value).sum())
        assert strict.voxels[k] <= loose.voxels[k]
        inside = loose.targets[k] != IGNORE
        assert torch.all(loose.targets[k][inside] == k + 1)
    assert strict.voxels.sum() < loose.voxels.sum()


def test_result_ranks_proponents_and_opponents_and_writes_csv(card, tmp_path):
    result = influence(blob_case(), card, engine="exact", threshold=0.0)
    assert isinstance(result, InfluenceResult) and result.engine == "exact"
    assert result.layer_names and result.checkpoints and result.learning_rates == LRS
    for test_class in result.test_classes:
        pros, cons = result.proponents(test_class, top=4), result.opponents(test_class, top=4)
        assert all(isinstance(e, Evidence) for e in pros + cons)
        assert [e.score for e in pros] == sorted((e.score for e in pros), reverse=True) and all(e.score > 0 for e in pros)
        assert [e.score for e in cons] == sorted(e.score for e in cons) and all(e.score < 0 for e in cons)
        for e in pros + cons:
            n, b = result.training_cases.index(e.training_case), result.train_classes.index(e.train_class)
            assert e.score == result.scores[result.test_classes.index(test_class), n, b]
            assert all(a <= c < z for c, (a, z) in zip(e.centroid, e.bbox)) and e.voxels > 0
    only = result.proponents("edema", "enhancing", top=10) + result.opponents("edema", "enhancing", top=10)
    assert {e.train_class for e in only} <= {"enhancing"}
    with pytest.raises(ValueError, match="was not queried"):
        result.proponents("liver")
    path = result.to_csv(tmp_path / "out" / "influence.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(result.rows()) > 0
    best = min((r for r in rows if r["test_class"] == "edema"), key=lambda r: int(r["rank"]))
    assert float(best["score"]) == pytest.approx(result.scores[result.test_classes.index("edema")].max(), rel=1e-5)


def test_training_case_is_regenerated_and_cached(card, cases_cache):
    from napari_segxai.core.training.synth import GENERATOR_VERSION, generate_case

    case = training_case(card, SEEDS[1])
    again = training_case(card, SEEDS[1])
    expected = generate_case(SEEDS[1], size="toy").case
    np.testing.assert_allclose(case.channels, expected.channels, atol=1e-6)
    np.testing.assert_array_equal(again.label, expected.label)
    assert case.name == expected.name and (cases_cache / f"v{GENERATOR_VERSION}-toy" / expected.name / "ground_truth.json").is_file()
    with pytest.raises(ValueError, match="not one of the 3 training cases"):
        training_case(card, 5)


def test_a_card_without_training_record_says_so_in_one_sentence(tmp_path):
    card = load_model_card(toy_model(tmp_path / "bare", training=False))
    with pytest.raises(NoTrainingRecord) as err:
        influence(blob_case(), card)
    assert str(err.value) == "This model has no recorded checkpoints; train it with `segxai train` to record them."
    assert isinstance(err.value, ValueError)


def test_user_mistakes_are_value_errors(card):
    with pytest.raises(ValueError, match="has no class 'liver'"):
        influence(blob_case(), card, classes=["liver"], engine="exact")
    with pytest.raises(ValueError, match="Unknown TracIn engine"):
        influence(blob_case(), card, engine="fast")
    with pytest.raises(ValueError, match="Unknown layer choice"):
        influence(blob_case(), card, engine="exact", layers="first")
    with pytest.raises(ValueError, match="threshold"):
        influence(blob_case(), card, engine="exact", threshold=1.5)


def test_feature_similarity_check_on_a_training_case_finds_itself(card, tmp_path):
    from napari_segxai.core.influence.features import similarity_check, similarity_plot, similarity_table

    query = training_case(card, SEEDS[0])
    result = influence(query, card, engine="exact", threshold=0.0)
    assert result.similarity.shape == result.scores.shape
    for a, name in enumerate(result.test_classes):
        if result.test_voxels[a] and result.train_voxels[0, a]:
            assert result.similarity[a, 0, a] == pytest.approx(1.0, abs=1e-5)  # the same region of the same case
    assert np.all(np.abs(result.similarity) <= 1 + 1e-6)
    rows = similarity_check(result, top=2)
    assert rows and all(-1 <= r.spearman <= 1 and r.top == 2 for r in rows)
    assert "Spearman" in similarity_table(rows)
    path = similarity_plot(result, rows, tmp_path / "similarity.png")
    assert path.stat().st_size > 1000


def test_a_given_segmentation_is_reused_for_the_regions(card):
    from napari_segxai.core.model.inference import segment

    case = blob_case()
    fresh = influence(case, card, engine="exact", threshold=0.3, classes=["edema"])
    reused = influence(case, card, engine="exact", threshold=0.3, classes=["edema"], segmentation=segment(case, card))
    np.testing.assert_array_equal(reused.test_voxels, fresh.test_voxels)
    np.testing.assert_allclose(reused.scores, fresh.scores, rtol=1e-5, atol=1e-9)
    other = segment(blob_case(shape=(16, 16, 20)), card)
    with pytest.raises(ValueError, match="does not belong to this case"):
        influence(case, card, engine="exact", segmentation=other)
