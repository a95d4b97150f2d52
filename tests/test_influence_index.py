"""TracIn indexed engine: equal to exact unprojected (to float16 storage), round trip, staleness, projection, where the file goes, dask build."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from _influence import SEEDS, blob_case, toy_model
from napari_segxai.core.influence import influence
from napari_segxai.core.influence.checkpoints import load_tracin_model
from napari_segxai.core.influence.index import (
    build_index, compress_rows, index_status, load_or_build_index, read_index, resolve_projection,
)
from napari_segxai.core.influence.projection import project, sketch
from napari_segxai.core.model.loading import load_model_card

#: Scores from float16 rows (each scaled to a largest entry of 1) against float32 ones.
STORED = {"rtol": 2e-3}


def close_to_exact(indexed: np.ndarray, exact: np.ndarray) -> None:
    np.testing.assert_allclose(indexed, exact, rtol=STORED["rtol"], atol=STORED["rtol"] * np.abs(exact).max())


@pytest.fixture(scope="module")
def cases_cache(tmp_path_factory):
    """Regenerated training cases go to a temporary folder shared by this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGXAI_TRAINING_CASES", str(tmp_path_factory.mktemp("cases")))
        yield


@pytest.fixture
def card(tmp_path, cases_cache):
    return load_model_card(toy_model(tmp_path / "toy"))


def test_unprojected_index_equals_exact_and_lives_beside_the_checkpoints(card):
    case = blob_case()
    exact = influence(case, card, engine="exact", threshold=0.2, scoring="relative")
    indexed = influence(case, card, engine="indexed", threshold=0.2, scoring="relative")
    assert indexed.projection is None and indexed.details["index_status"] == "built"
    close_to_exact(indexed.scores, exact.scores)
    np.testing.assert_array_equal(indexed.centroids, exact.centroids)
    np.testing.assert_array_equal(indexed.train_voxels, exact.train_voxels)
    path = indexed.details["index_path"]
    assert str(card.training.parent / "influence") in path
    assert (card.training.parent / "influence" / ".gitignore").read_text().strip().endswith("*")
    again = influence(case, card, engine="indexed", threshold=0.2, scoring="relative")
    assert again.details["index_status"] == "current" and again.details["index_path"] == path
    np.testing.assert_array_equal(again.scores, indexed.scores)


def test_index_round_trips_from_disk(card):
    model = load_tracin_model(card)
    built = build_index(model, [1, 2, 3], threshold=0.0)
    back = read_index(built.path)
    assert built.gradients.dtype == np.float16 and built.scales.shape == built.gradients.shape[:3]
    for name in ("gradients", "scales", "voxels", "centroids", "bboxes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(built, name))
    assert back.seeds == SEEDS and back.case_names == built.case_names and back.learning_rates == built.learning_rates
    assert back.meta["fingerprint"] == built.meta["fingerprint"] and back.parameters == model.parameters
    test = torch.randn(len(model.states), 2, model.parameters)
    np.testing.assert_array_equal(back.scores(test), built.scores(test))


def test_a_changed_checkpoint_makes_the_index_stale_and_it_is_rebuilt(card):
    from napari_segxai.core.model.weights import load_state_dict, save_state_dict

    case = blob_case()
    first = influence(case, card, threshold=0.0, scoring="relative")
    model = load_tracin_model(card)
    assert index_status(model, [1, 2, 3], threshold=0.0)[1] == "current"
    assert index_status(model, [1, 2, 3], threshold=0.3)[1] == "missing"
    mirrored = load_tracin_model(dataclasses.replace(card, mirror_axes=(0,)))  # other regions: not this index
    assert index_status(mirrored, [1, 2, 3], threshold=0.0)[1] != "current"
    path = model.record.checkpoints[0].path
    state = load_state_dict(path)
    save_state_dict({k: v * 1.5 if v.is_floating_point() else v for k, v in state.items()}, path)
    model = load_tracin_model(card)
    assert index_status(model, [1, 2, 3], threshold=0.0)[1] == "stale"
    second = influence(case, card, threshold=0.0, scoring="relative")
    assert second.details["index_status"] == "rebuilt (stale)"
    assert second.details["index_path"] == first.details["index_path"]
    assert not np.allclose(second.scores, first.scores)
    exact = influence(case, card, engine="exact", threshold=0.0, scoring="relative")
    close_to_exact(second.scores, exact.scores)
    assert index_status(model, [1, 2, 3], threshold=0.0)[1] == "current"


@pytest.mark.parametrize("method", [project, sketch])
def test_projection_is_seeded_and_keeps_inner_products(method):
    torch.manual_seed(0)
    vectors = torch.randn(6, 10000)
    a, b = method(vectors, 4096), method(vectors, 4096)
    assert torch.equal(a, b) and a.shape == (6, 4096)
    assert not torch.equal(method(vectors, 4096, seed=1), a)
    exact, approx = vectors @ vectors.T, (a @ a.T)
    assert torch.allclose(approx, exact, atol=0.05 * float(exact.diag().mean()))
    assert resolve_projection(500, None) is None and resolve_projection(10**6, None) > 0
    assert resolve_projection(500, 1000) is None and resolve_projection(5000, 256) == 256
    with pytest.raises(ValueError, match="projection size"):
        resolve_projection(5000, -3)


def test_projected_index_scores_are_the_projected_gradients_products(card):
    case = blob_case()
    model = load_tracin_model(card, layers="all")
    result = influence(case, card, layers="all", projection=64, threshold=0.0)
    assert result.projection == 64 and result.parameters == model.parameters > 64
    index = read_index(result.details["index_path"])
    assert index.gradients.shape == (len(model.states), len(SEEDS), 3, 64)
    from napari_segxai.core.influence.exact import training_example

    train = model.gradients(training_example(model, SEEDS[1], [1, 2, 3], threshold=0.0))
    t, k, d = train.shape
    projected = sketch(train.reshape(t * k, d), 64).reshape(t, k, 64).numpy()
    np.testing.assert_allclose(index.training_gradients()[:, 1], projected, rtol=0,
                               atol=2**-11 * np.abs(projected).max())
    test = torch.randn(t, 2, d)
    expected = torch.einsum("t,tad,tnbd->anb", torch.tensor(index.learning_rates, dtype=torch.float64),
                            sketch(test.reshape(t * 2, d), 64).reshape(t, 2, 64).double(),
                            torch.from_numpy(index.training_gradients()).double())
    np.testing.assert_allclose(index.scores(test), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("where", ["read-only", "installed"])
def test_a_read_only_or_installed_model_puts_the_index_in_the_user_cache(where, tmp_path, cases_cache, monkeypatch):
    from napari_segxai.core.influence import index as index_module

    folder = tmp_path / ("lib/python3.11/site-packages/pkg/models" if where == "installed" else "models")
    card = load_model_card(toy_model(folder / "toy"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if where == "read-only":  # (tests may run as root, who can write anywhere)
        monkeypatch.setattr(index_module, "_writable", lambda folder: False)
    model = load_tracin_model(card)
    index = load_or_build_index(model, [2], threshold=0.0)
    assert str(index.path).startswith(str(tmp_path / "xdg" / "napari-segxai" / "influence"))
    assert not (card.training.parent / "influence").exists()
    assert load_or_build_index(model, [2], threshold=0.0).meta["status"] == "current"


def test_dask_local_cluster_build_equals_in_process_build(card, tmp_path):
    model = load_tracin_model(card)
    here = build_index(model, [1, 2, 3], threshold=0.0, index_dir=tmp_path / "here")
    there = build_index(model, [1, 2, 3], threshold=0.0, index_dir=tmp_path / "there", distributed=True, workers=1)
    assert there.meta["built_with"] == "dask" and here.meta["built_with"] == "in-process"
    assert there.seeds == here.seeds and there.case_names == here.case_names
    np.testing.assert_allclose(there.training_gradients(), here.training_gradients(), rtol=1e-3,
                               atol=1e-3 * np.abs(here.training_gradients()).max())
    np.testing.assert_array_equal(there.voxels, here.voxels)
    np.testing.assert_array_equal(there.centroids, here.centroids)
    assert there.meta["fingerprint"] == here.meta["fingerprint"]


def test_a_killed_dask_build_resumes_from_its_finished_chunks(card, tmp_path):
    from napari_segxai.core.progress import Cancelled

    model = load_tracin_model(card)
    folder = tmp_path / "idx"
    reports: list = []
    with pytest.raises(Cancelled):  # stopped once the first chunk (one case of three) is in
        build_index(model, [1, 2, 3], threshold=0.0, index_dir=folder, distributed=True, workers=1,
                    should_cancel=lambda: bool(reports) and reports[-1][0] >= 1,
                    progress=lambda done, total: reports.append((done, total)))
    kept = list(folder.glob("*.parts/chunk-*.npz"))
    assert kept, "the finished chunk was not kept"
    reports.clear()
    resumed = build_index(model, [1, 2, 3], threshold=0.0, index_dir=folder, distributed=True, workers=1,
                          progress=lambda done, total: reports.append((done, total)))
    assert reports[0][0] >= 1  # the kept case counts as done from the start
    assert not list(folder.glob("*.parts"))  # gone once the index is written
    fresh = build_index(model, [1, 2, 3], threshold=0.0, index_dir=tmp_path / "fresh")
    assert resumed.case_names == fresh.case_names
    np.testing.assert_allclose(resumed.training_gradients(), fresh.training_gradients(), rtol=1e-3,
                               atol=1e-3 * np.abs(fresh.training_gradients()).max())


def test_a_slice_wise_2d_model_gets_the_same_scores_from_both_engines(tmp_path, cases_cache):
    card = load_model_card(toy_model(tmp_path / "toy2d", spatial_dims=2))
    case = blob_case()
    exact = influence(case, card, engine="exact", threshold=0.0, layers="all", scoring="relative")
    indexed = influence(case, card, engine="indexed", threshold=0.0, layers="all", scoring="relative", projection=0)
    assert exact.scores.shape == (3, len(SEEDS), 3) and np.abs(exact.scores).max() > 0
    close_to_exact(indexed.scores, exact.scores)
    assert exact.similarity.shape == exact.scores.shape


def test_file_digest_sees_a_same_size_rewrite_that_keeps_the_mtime(tmp_path, monkeypatch):
    import hashlib
    import os
    import time

    from napari_segxai.core.io import files

    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 64)
    stamp = path.stat().st_mtime_ns

    def rewrite(data: bytes, *, replace: bool) -> str:
        if replace:
            (tmp_path / "new.bin").write_bytes(data)
            os.replace(tmp_path / "new.bin", path)
        else:
            path.write_bytes(data)
        os.utime(path, ns=(stamp, stamp))
        assert path.stat().st_mtime_ns == stamp and path.stat().st_size == 64
        return hashlib.sha256(data).hexdigest()

    assert files.file_digest(path) == hashlib.sha256(b"a" * 64).hexdigest()
    # a file changed moments ago is hashed again, even within one timestamp tick
    assert rewrite(b"b" * 64, replace=False) == files.file_digest(path)
    # a settled file is remembered, keyed by inode and ctime as well as size and mtime
    monkeypatch.setattr(files, "SETTLED_NS", -1)
    assert files.file_digest(path) == hashlib.sha256(b"b" * 64).hexdigest()
    time.sleep(0.05)
    assert rewrite(b"c" * 64, replace=False) == files.file_digest(path)
    assert rewrite(b"d" * 64, replace=True) == files.file_digest(path)


def test_stored_rows_are_float16_scaled_per_row_and_keep_tiny_gradients():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((2, 3, 4, 500)).astype(np.float32) * np.array([1e-9, 1e-3, 1.0, 50.0])[None, None, :, None]
    rows[1, 2, 0] = 0.0
    stored, scales = compress_rows(rows)
    assert stored.dtype == np.float16 and scales.dtype == np.float32 and scales.shape == (2, 3, 4)
    assert np.abs(stored).max() == 1.0 and np.all(stored[1, 2, 0] == 0) and scales[1, 2, 0] == 0
    back = stored.astype(np.float32) * scales[..., None]
    error = np.abs(back - rows).max(axis=-1) / np.where(scales > 0, scales, 1)
    assert error.max() <= 2**-11  # half a float16 ulp at 1, for 1e-9-sized rows too (plain float16 flushes them to 0)


def test_an_index_shipped_beside_the_checkpoints_is_used_after_moving_into_an_installed_package(tmp_path, cases_cache,
                                                                                              monkeypatch):
    import shutil

    from napari_segxai.core.influence import index as index_module

    built_card = load_model_card(toy_model(tmp_path / "here" / "toy"))
    built = load_or_build_index(load_tracin_model(built_card), [1, 2, 3], threshold=0.0)
    assert built.meta["status"] == "built" and all(not p.startswith("/") for p in built.meta["checkpoints"])
    installed = tmp_path / "lib/python3.11/site-packages/pkg/models/toy"
    shutil.copytree(tmp_path / "here" / "toy", installed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(index_module, "_writable", lambda folder: False)
    model = load_tracin_model(load_model_card(installed / "card.yaml"))
    shipped = installed / "training" / "influence" / built.path.name
    assert index_status(model, [1, 2, 3], threshold=0.0) == (shipped, "current")
    index = load_or_build_index(model, [1, 2, 3], threshold=0.0)
    assert index.meta["status"] == "current" and index.path == shipped and not (tmp_path / "xdg").exists()
    test = torch.randn(len(model.states), 2, model.parameters)
    np.testing.assert_array_equal(index.scores(test), built.scores(test))
