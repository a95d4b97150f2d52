"""Run segment + explain + RoI importance over a cohort on dask.distributed, resumably, one output folder per case."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .. import progress as _progress
from ..dask_cluster import dask_client, default_workers, one_line_error
from ..io.files import write_text
from .cases import CohortCase, case_id, find_cases

DONE = "done.json"
"""Written last into a case's folder: its record; a case whose folder has it is finished."""
FAILED = "failed.json"
"""Written into a case's folder when the case failed: its one-line error (removed when it later succeeds)."""
CASES = "cases"


@dataclass(frozen=True)
class CohortSettings:
    """What every case gets: the model card, the attribution method and its parameters, and where to run."""

    model_card: str
    method: str = "saliency"
    parameters: tuple[tuple[str, Any], ...] = ()
    maps: bool = False
    device: Optional[str] = None
    threads: Optional[int] = None
    trusted: bool = False
    mirroring: bool = True  # False: the card's inference.mirror_axes left out (--no-mirroring)

    def fingerprint(self) -> dict:
        """What must match for an earlier case result to be reused: card, method, parameters (and mirroring, when off)."""
        return {"model_card": str(Path(self.model_card).resolve()), "method": self.method,
                "parameters": {k: _plain(v) for k, v in self.parameters}, **({} if self.mirroring else {"mirroring": False})}


@dataclass(frozen=True)
class CohortRun:
    """What a cohort run did: every case's identifier, those computed now, reused from earlier runs, and failed."""

    cases: tuple[CohortCase, ...]
    computed: tuple[str, ...]
    reused: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0


# --------------------------------------------------------------------------- on a worker

_MODELS: dict[tuple, tuple] = {}
_MODEL_LOCK = threading.Lock()
"""One case at a time per worker process: the cached network is shared, and explaining toggles its parameters' gradients."""


def worker_model(settings: CohortSettings):
    """The card, network and device of ``settings``, loaded once per worker process and kept (keyed by card path, files' times and device)."""
    import dataclasses

    import torch

    from ..model.card import build_network
    from ..model.loading import load_model_card
    from ..model.device import pick_device

    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    path = Path(settings.model_card).resolve()
    card = load_model_card(path)
    if settings.trusted and not card.trusted:
        card = dataclasses.replace(card, trusted=True)
    if not settings.mirroring:
        card = dataclasses.replace(card, mirror_axes=())
    device = pick_device(settings.device)
    key = (str(path), path.stat().st_mtime_ns, card.weights.stat().st_mtime_ns, str(device), card.trusted, card.mirror_axes)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time
        _MODELS[key] = (card, build_network(card, device), device)
    return _MODELS[key]


def case_folder(out: str | Path, case: CohortCase | str) -> Path:
    """The output folder of one case: ``OUT/cases/<case>``."""
    return Path(out) / CASES / (case.case_id if isinstance(case, CohortCase) else case)


def read_record(out: str | Path, case: CohortCase | str) -> Optional[dict]:
    """The finished record of a case, or None when it is not finished (or its marker is unreadable)."""
    path = case_folder(out, case) / DONE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def process_case(case: CohortCase, out: str, settings: CohortSettings) -> dict:
    """Segment, explain and measure one case; write its outputs and then its done marker; a failure is recorded, not raised."""
    folder = case_folder(out, case)
    earlier = read_record(out, case)
    if earlier is not None and _reusable(earlier, settings):
        return dict(earlier, reused=True)  # finished already (e.g. by a worker that died before reporting)
    start = time.perf_counter()
    try:
        with _MODEL_LOCK:  # a worker of a --scheduler cluster may run several tasks in threads
            record = _explain_case(case, folder, settings)
    except Exception as exc:  # noqa: BLE001 - one failed case is recorded and the cohort goes on
        return record_failure(out, case, one_line_error(exc))
    record["seconds"]["total"] = round(time.perf_counter() - start, 3)
    record["worker_pid"] = os.getpid()
    write_text(folder / DONE, json.dumps(record, indent=1) + "\n")
    (folder / FAILED).unlink(missing_ok=True)
    return dict(record, reused=False)


def _explain_case(case: CohortCase, folder: Path, settings: CohortSettings) -> dict:
    """The work on one case: load, segment, explain, regions, RoI importance, Dice; files written into ``folder``."""
    import torch

    from ..attribution import explain_case
    from ..io.nifti import load_case, save_nifti
    from ..roi import case_regions, roi_importance
    from ..model.preprocess import channel_indices
    from ..model.inference import segment
    from ..training.evaluate import dice

    card, network, device = worker_model(settings)
    loaded = time.perf_counter()
    image = load_case(case.path)
    channel_indices(image, card)  # a missing modality fails here, with its sentence
    t0 = time.perf_counter()
    segmentation = segment(image, card, network=network, device=device)
    t1 = time.perf_counter()
    present = set(np.unique(segmentation.labels).tolist())
    explained = [i for i, c in enumerate(card.classes) if c.label != 0 and c.label in present]
    absent = [c.name for c in card.classes if c.label != 0 and c.label not in present]
    folder.mkdir(parents=True, exist_ok=True)
    files, rows, relevance = [], [], None
    if explained:  # a class the model did not predict has no region to explain
        relevance = explain_case(image, card, method=settings.method, classes=explained, network=network,
                                 device=device, **dict(settings.parameters))
        regions = case_regions(segmentation.labels, card.classes, channels=image.channels)
        roi = roi_importance(relevance, regions)
        files.append(str(roi.to_csv(folder / "roi.csv")))
        rows = [{k: _plain(v) for k, v in row.items() if k not in ("method", "target")} for row in roi.rows()]
    t2 = time.perf_counter()
    if settings.maps:
        protected = image.source_paths
        files.append(str(save_nifti(segmentation.labels, image.affine, folder / "segmentation.nii.gz", protected=protected)))
        for k, name in enumerate(relevance.class_names if relevance is not None else ()):
            path = folder / f"relevance_{case_id(name)}.nii.gz"
            files.append(str(save_nifti(np.moveaxis(relevance.relevance[k], 0, -1), image.affine, path, protected=protected)))
    scores = None
    if image.label is not None:
        scores = {c.name: round(dice(segmentation.labels == c.label, image.label == c.label), 6)
                  for c in card.classes if c.label != 0}
    return {
        "case": case.case_id,
        "name": image.name,
        "source": case.source,
        "study_in": str(case.path.parent) if case.dicom else None,  # where to find a DICOM study again by its pseudonym
        "status": "done",
        "settings": settings.fingerprint(),
        "model": card.name,
        "method": settings.method,
        "parameters": {k: _plain(v) for k, v in (relevance.parameters if relevance else dict(settings.parameters)).items()},
        "target": relevance.target_description if relevance else None,
        "classes": list(relevance.class_names) if relevance else [],
        "not_predicted": absent,
        "modalities": list(card.modalities),
        "predicted_voxels": {c.name: int(np.count_nonzero(segmentation.labels == c.label))
                             for c in card.classes if c.label != 0},
        "roi": rows,
        "dice": scores,
        "reference_scheme": image.label_scheme.name if image.label_scheme is not None else None,
        "maps": bool(settings.maps),
        "files": files,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seconds": {"load": round(t0 - loaded, 3), "segment": round(t1 - t0, 3), "explain": round(t2 - t1, 3)},
    }


def record_failure(out: str | Path, case: CohortCase, error: str) -> dict:
    """Write a case's failure (its one-line error) into its folder and return the failure record."""
    record = {"case": case.case_id, "source": case.source, "status": "failed", "error": error}
    folder = case_folder(out, case)
    write_text(folder / FAILED, json.dumps(record, indent=1) + "\n")
    return record


def _reusable(record: dict, settings: CohortSettings) -> bool:
    """Whether a finished record answers ``settings`` (same card, method, parameters; maps present if asked for)."""
    return record.get("settings") == settings.fingerprint() and (record.get("maps") or not settings.maps)


def _plain(value: Any) -> Any:
    """A value as plain JSON (numbers, text, booleans, lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------- on the client


def pending_cases(cases_dir: str | Path, out: str | Path, settings: CohortSettings) -> tuple[list[CohortCase], list[CohortCase], list[CohortCase]]:
    """All cases of ``cases_dir``, those left to compute and those finished earlier (ValueError if ``out`` holds another cohort's results)."""
    out = Path(out)
    cases = find_cases(cases_dir, exclude=(out,))
    todo, finished = [], []
    for case in cases:
        record = read_record(out, case)
        if record is None:
            todo.append(case)
        elif record.get("settings") != settings.fingerprint():
            raise ValueError(f"{out} holds results of case {case.case_id} made with another model or method; "
                             "choose a new --out folder (or delete its cases folder to start over).")
        elif settings.maps and not record.get("maps"):
            todo.append(case)
        else:
            finished.append(case)
    return cases, todo, finished


def run_cohort(
    cases_dir: str | Path,
    out: str | Path,
    settings: CohortSettings,
    *,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str | float | None = "auto",
    progress: Optional[_progress.ProgressFn] = None,
    should_cancel: Optional[_progress.CancelFn] = None,
    on_result: Optional[Callable[[dict], None]] = None,
) -> CohortRun:
    """Compute every case not finished yet on dask workers (a given client, a scheduler address, else a LocalCluster)."""
    start = time.perf_counter()
    out = Path(out).expanduser()
    if workers is not None and workers < 1:
        raise ValueError(f"The number of workers must be 1 or more, got {workers}.")
    cases, todo, finished = pending_cases(cases_dir, out, settings)
    (out / CASES).mkdir(parents=True, exist_ok=True)
    total = len(cases)
    _progress.step(len(finished), total, progress, should_cancel)
    if not todo:
        return CohortRun(tuple(cases), (), tuple(c.case_id for c in finished), seconds=time.perf_counter() - start)
    if client is None and not scheduler:
        n = workers or default_workers()
        if settings.threads is None:
            settings = _with_threads(settings, max(1, (os.cpu_count() or 1) // n))
    with dask_client(client, scheduler, workers, memory_limit=memory_limit) as client:
        n_workers = len(client.scheduler_info()["workers"])
        computed, reused, failed = _compute(client, todo, out, settings, len(finished), total,
                                            progress, should_cancel, on_result)
    reused = [c.case_id for c in finished] + reused
    return CohortRun(tuple(cases), tuple(computed), tuple(reused), failed, time.perf_counter() - start, n_workers)


def _with_threads(settings: CohortSettings, threads: int) -> CohortSettings:
    """``settings`` with torch's thread count per worker set."""
    import dataclasses

    return dataclasses.replace(settings, threads=threads)


def _compute(client, todo, out, settings, done, total, progress, should_cancel, on_result):
    """Submit one task per case and gather as they finish; a worker lost too often fails only its case."""
    from distributed import as_completed

    futures = {client.submit(process_case, case, str(out), settings, key=f"segxai-cohort-{case.case_id}-{os.getpid()}-{time.time_ns()}",
                             pure=False): case for case in todo}
    computed, reused, failed = [], [], {}
    try:
        for future in as_completed(futures):
            case = futures[future]
            if future.status == "error":
                record = record_failure(out, case, "the case's task failed: " + one_line_error(future.exception()))
            elif future.status == "cancelled":
                record = record_failure(out, case, "the case's task was cancelled")
            else:
                record = future.result()
            if record["status"] == "failed":
                failed[case.case_id] = record["error"]
            elif record.get("reused"):
                reused.append(case.case_id)
            else:
                computed.append(case.case_id)
            if on_result is not None:
                on_result(record)
            done += 1
            future.release()
            _progress.step(done, total, progress, should_cancel)
    except BaseException:
        client.cancel(list(futures))
        raise
    return computed, reused, failed
