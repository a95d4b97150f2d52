"""Synthetic brain-tumour cases grown into real anatomy (the MNI152 template) with known ground truth.

The anatomy is nilearn's MNI152 (2009 symmetric) template at 2 mm: grey matter, white matter and
brain mask maps; cerebrospinal fluid is the brain mask minus grey and white matter. Each case is
made from a seed, deterministically:

1. The anatomy is moved: a small rigid motion (rotation, shift, left-right flip), a smooth random
   non-linear warp, enlarged or shrunk ventricles and, optionally, mass effect around the tumour.
2. A tumour (core radius 6-24 mm, log-uniform) is grown in the cerebrum, next to the lateral
   ventricles or in the cerebellum: a lumpy, non-spherical core inside oedema that spreads further
   in white matter. The core is an enhancing rim round a necrotic centre, solid enhancing tumour,
   or non-enhancing (all label 1, dark on T1ce, as in several real gliomas).
3. Four modalities (T1, T1ce, T2, FLAIR) are weighted sums of the tissue and tumour maps with
   per-case random contrasts (each tissue's difference to white matter scaled by 0.6-1.4; the
   core's FLAIR from dark necrosis to bright non-enhancing tumour), a cerebellar intensity shift,
   texture, a non-linear intensity response (a power 0.7-1.4), a bias field, blur, sometimes thick
   slices (blur along one axis) and noise; each is z-scored in the brain.

Version 2 added sites, core types, intensity response and thick slices, and moved the contrasts
towards the real TCGA cases (:func:`modality_signature`: oedema less bright, necrosis darker on T1).

Labels follow BraTS: 1 necrosis (NCR), 2 oedema (ED), 4 enhancing tumour (ET). By construction
oedema shows mainly on FLAIR and T2, enhancement on T1ce and necrosis on T1ce (dark) and T2
(bright); the measured per-class, per-modality contrast of every case is recorded as its
``modality_signature`` (also in ``ground_truth.json``).

``size="full"`` is the 2 mm template grid (99 x 117 x 95 voxels, RAS); ``size="toy"`` is the same
anatomy resampled to 32^3 (about 6-7 mm voxels) for fast tests; ``size="1mm"`` is the 1 mm template
grid (197 x 233 x 189), for a demo whose overlays are smooth at full screen. Operations counted in
voxels (erosion, softening, texture, blur) are doubled at 1 mm so that they keep their size in mm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..case import BRATS_124, Case
from ..io.cache import cache_dir
from ..io.files import atomic_path


GENERATOR_VERSION = 2

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

COMPARTMENTS: dict[int, str] = {1: "necrosis", 2: "edema", 4: "enhancing"}

SIZES: dict[str, tuple[int, int, int] | None] = {"full": None, "toy": (32, 32, 32), "1mm": None}
#: The template resolution (mm) each size starts from.
RESOLUTIONS: dict[str, int] = {"full": 2, "toy": 2, "1mm": 1}


DEMO_SEED = 20240607
"""The seed of the demo case; training and evaluation seeds never include it."""


# Intensities relative to white matter, one per modality (t1, t1ce, t2, flair). A case scales
# every difference to white matter by a random factor in [1 - CONTRAST_JITTER, 1 + CONTRAST_JITTER].
BASE_CONTRAST: dict[str, tuple[float, float, float, float]] = {
    "csf": (0.25, 0.25, 1.00, 0.15),
    "gm": (0.60, 0.62, 0.62, 0.66),
    "wm": (0.85, 0.82, 0.42, 0.50),
    "necrosis": (0.50, 0.30, 0.97, 0.56),
    "edema": (0.74, 0.70, 0.72, 0.92),
    "enhancing": (0.64, 1.32, 0.66, 0.74),
}


CONTRAST_JITTER = 0.4


@dataclass(frozen=True)
class SynthCase:
    """A generated case with its per-class, per-modality contrast and the parameters that made it."""

    case: Case
    modality_signature: dict[str, dict[str, float]]
    seed: int
    params: dict = field(default_factory=dict)
    cerebellum: np.ndarray | None = field(default=None, repr=False, compare=False)   # cerebellar weight per voxel


@dataclass(frozen=True)
class _Anatomy:
    """Tissue maps of the template on one grid, with what the generator needs to place things."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    cerebellum: np.ndarray
    affine: np.ndarray
    spacing: np.ndarray          # mm per voxel along each axis
    ventricle_mm: np.ndarray     # centre of the lateral ventricles, grid mm
    centres_mm: np.ndarray       # (N, 3) candidate tumour centres in the cerebrum, grid mm
    depth_mm: np.ndarray         # (N,) distance of each candidate to the brain's edge
    cerebellar_mm: np.ndarray    # (M, 3) candidate centres in the cerebellum, grid mm

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.gm.shape)


@functools.lru_cache(maxsize=2)
def _template(resolution: int) -> dict[str, np.ndarray]:
    """The MNI152 grey/white matter and brain mask at ``resolution`` mm, read once (disk cache after the first time)."""
    path = cache_dir() / f"mni152-{resolution}mm-v{GENERATOR_VERSION}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError):
            pass
    from nilearn import datasets  # imported here: slow, and only the generator needs it

    maps = {
        "gm": datasets.load_mni152_gm_template(resolution=resolution),
        "wm": datasets.load_mni152_wm_template(resolution=resolution),
        "mask": datasets.load_mni152_brain_mask(resolution=resolution),
    }
    out = {k: np.clip(np.asarray(img.get_fdata(), dtype=np.float32), 0, 1) for k, img in maps.items()}
    out["affine"] = np.asarray(maps["mask"].affine, dtype=np.float64)
    try:
        with atomic_path(path, suffix=".npz") as temporary:
            np.savez_compressed(temporary, **out)
    except OSError:
        pass  # a read-only cache only costs the next run the same loading
    return out


@functools.lru_cache(maxsize=4)
def _anatomy(size: str) -> _Anatomy:
    """The template anatomy on the grid of ``size`` ("full" or "toy")."""
    t = _template(RESOLUTIONS[size])
    gm, wm, mask, affine = t["gm"], t["wm"], t["mask"], t["affine"]
    target = SIZES[size]
    if target is not None:
        zoom = [n / o for n, o in zip(target, gm.shape)]
        gm, wm, mask = (np.clip(ndimage.zoom(a, zoom, order=1), 0, 1).astype(np.float32) for a in (gm, wm, mask))
        step = [(o - 1) / (n - 1) for o, n in zip(t["gm"].shape, target)]
        affine = affine @ np.diag(step + [1.0])
    mask = mask * (mask > 0.5)
    gm, wm = gm * mask, wm * mask
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(mask - gm - wm, 0, 1).astype(np.float32)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    world = _world_coordinates(gm.shape, affine)
    # Cerebellum: below and behind the tentorium in MNI space (soft box).
    cerebellum = (
        _sigmoid((-42.0 - world[1]) / 4.0) * _sigmoid((-12.0 - world[2]) / 4.0) * (mask > 0.5)
    ).astype(np.float32)
    depth = ndimage.distance_transform_edt(mask > 0.5, sampling=spacing)
    central = (depth > 25) & (np.abs(world[0]) < 25) & (csf > 0.6) & (cerebellum < 0.1)
    ventricle_mm = np.argwhere(central).mean(axis=0) * spacing if central.any() else np.array(gm.shape) * spacing / 2
    candidates = ((gm + wm) > 0.7) & (depth > 12) & (cerebellum < 0.05) & (world[2] > -20)
    idx = np.argwhere(candidates)
    infratentorial = ((gm + wm) > 0.7) & (depth > 8) & (cerebellum > 0.5)
    return _Anatomy(
        gm=gm.astype(np.float32), wm=wm.astype(np.float32), csf=csf, mask=mask.astype(np.float32),
        cerebellum=cerebellum, affine=affine, spacing=spacing, ventricle_mm=ventricle_mm,
        centres_mm=idx * spacing, depth_mm=depth[candidates], cerebellar_mm=np.argwhere(infratentorial) * spacing,
    )


def _world_coordinates(shape, affine) -> np.ndarray:
    """World (mm) coordinates of every voxel centre, shaped (3, *shape)."""
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3] @ grid + affine[:3, 3:4]
    return world.reshape((3,) + tuple(shape)).astype(np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _smooth_field(rng: np.random.Generator, shape, spacing, scale_mm: float) -> np.ndarray:
    """A smooth random field with unit standard deviation and features of about ``scale_mm``."""
    extent = np.asarray(shape) * spacing
    cells = np.maximum(np.ceil(extent / (scale_mm / 3.0)).astype(int), 4)
    low = ndimage.gaussian_filter(rng.standard_normal(cells).astype(np.float32), 1.5, mode="wrap")
    full = ndimage.zoom(low, [n / c for n, c in zip(shape, cells)], order=1, mode="nearest", grid_mode=True)
    full = full[: shape[0], : shape[1], : shape[2]]
    full -= full.mean()
    return (full / (full.std() + 1e-8)).astype(np.float32)


def _rotation(angles_rad) -> np.ndarray:
    """Rotation matrix from three angles (x, y, z)."""
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _magnify(q: np.ndarray, centre, sigma_mm, strength: float) -> np.ndarray:
    """Sampling coordinates that enlarge what lies around ``centre`` (shrink it if strength < 0)."""
    d = q - np.asarray(centre, dtype=np.float32).reshape(3, 1, 1, 1)
    s = np.asarray(sigma_mm, dtype=np.float32).reshape(3, 1, 1, 1)
    g = np.exp(-0.5 * np.sum((d / s) ** 2, axis=0))
    return q - d * (strength * g)[None]


def generate_case(seed: int, *, size: str = "full", thick_slices: bool = True) -> SynthCase:
    """A synthetic four-modality case with a three-compartment tumour, made deterministically from ``seed``;
    ``thick_slices=False`` leaves out the thick-slice blur it may draw (the demo case), nothing else."""
    if size not in SIZES:
        raise ValueError(f"Unknown synthetic case size {size!r}; use one of {', '.join(SIZES)}.")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"The seed must be a non-negative integer, got {seed}.")
    anat = _anatomy(size)
    k = 2 // RESOLUTIONS[size]  # voxels per 2 mm: what is counted in voxels keeps its size in mm
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    shape, sp = anat.shape, anat.spacing.astype(np.float32)
    params: dict = {"generator_version": GENERATOR_VERSION, "size": size, "shape": list(shape)}

    # 1. Where each output voxel samples the anatomy: rigid motion, warp, ventricles, mass effect.
    p = np.indices(shape, dtype=np.float32) * sp.reshape(3, 1, 1, 1)
    centre = (np.asarray(shape) - 1) * sp / 2
    angles = rng.uniform(-8, 8, 3)
    shift = rng.uniform(-5, 5, 3)
    flip = bool(rng.random() < 0.5)
    rot = _rotation(np.deg2rad(angles)).astype(np.float32)
    q = (p - (centre + shift).reshape(3, 1, 1, 1).astype(np.float32)).reshape(3, -1)
    q = (rot.T @ q).reshape((3,) + shape) + centre.reshape(3, 1, 1, 1).astype(np.float32)
    if flip:
        q[0] = 2 * centre[0] - q[0]
    warp_mm = float(rng.uniform(1.0, 5.0))
    for axis in range(3):
        q[axis] += warp_mm * _smooth_field(rng, shape, sp, 40.0)
    q0 = q  # the tumour is defined in these (pre-displacement) coordinates

    r_core = float(np.exp(rng.uniform(np.log(6.0), np.log(24.0))))  # small tumours as often as large ones
    r_core = max(r_core, 10.0) if size == "toy" else r_core  # a smaller core would vanish in 6-7 mm voxels
    site = str(rng.choice(["cerebrum", "periventricular", "cerebellum"], p=[0.75, 0.15, 0.10]))
    if site == "cerebellum" and len(anat.cerebellar_mm):
        r_core = min(r_core, 14.0)
        candidates = anat.cerebellar_mm
    else:
        depth_needed = min(r_core + 4.0, 28.0)
        ok = anat.depth_mm >= depth_needed
        if site == "periventricular":
            ok &= np.linalg.norm(anat.centres_mm - anat.ventricle_mm, axis=1) < 22.0
        pool = np.flatnonzero(ok) if ok.any() else np.arange(anat.depth_mm.size)
        candidates = anat.centres_mm[pool]
    c = candidates[rng.integers(len(candidates))].astype(np.float32) + rng.uniform(-1, 1, 3).astype(np.float32) * sp

    mass = float(rng.uniform(0.15, 0.5)) if rng.random() < 0.5 else 0.0
    ventricles = float(rng.uniform(-0.15, 0.45))
    q1 = _magnify(q0, c, [1.6 * r_core] * 3, mass) if mass else q0
    q1 = _magnify(q1, anat.ventricle_mm, [16.0, 26.0, 16.0], ventricles)
    vox = q1 / sp.reshape(3, 1, 1, 1)

    def sample(a):
        return ndimage.map_coordinates(a, vox, order=1, mode="constant", cval=0.0).astype(np.float32)

    mask = sample(anat.mask)
    brain = mask > 0.5
    gm, wm, cerebellum = sample(anat.gm), sample(anat.wm), sample(anat.cerebellum)
    csf_gamma = float(rng.uniform(0.6, 1.3))  # sharper or softer CSF partial volume
    csf = np.clip(mask - gm - wm, 0, 1) ** csf_gamma
    params.update(
        rigid_rotation_deg=angles.round(3).tolist(), rigid_shift_mm=shift.round(3).tolist(),
        left_right_flip=flip, warp_mm=round(warp_mm, 3), ventricle_enlargement=round(ventricles, 3),
        mass_effect=round(mass, 3), csf_gamma=round(csf_gamma, 3),
    )

    # 2. The tumour: lumpy core, necrotic centre, oedema reaching further into white matter.
    axes = _rotation(rng.uniform(0, np.pi, 3)).astype(np.float32)
    stretch = rng.uniform(0.75, 1.3, 3).astype(np.float32)
    d = (axes @ (q0 - c.reshape(3, 1, 1, 1)).reshape(3, -1)) / stretch.reshape(3, 1)
    r = np.sqrt(np.sum(d**2, axis=0)).reshape(shape)
    lump = float(rng.uniform(0.15, 0.35))
    # Core: enhancing rim round necrosis, solid enhancing, or non-enhancing (all label 1, dark on T1ce).
    core_type = str(rng.choice(["rim", "solid", "non-enhancing"], p=[0.7, 0.1, 0.2]))
    necrosis_fraction = {"rim": float(rng.uniform(0.45, 0.8)), "solid": 0.0, "non-enhancing": 2.0}[core_type]
    edema_factor = float(rng.uniform(1.2, 2.2))
    f_core = r / r_core + lump * _smooth_field(rng, shape, sp, 20.0)
    f_nec = r / r_core + 0.6 * lump * _smooth_field(rng, shape, sp, 15.0)
    f_ed = r / (r_core * edema_factor) + 0.2 * _smooth_field(rng, shape, sp, 25.0) - 0.25 * (wm - 0.5)
    core = (f_core < 1) & brain
    necrosis = (f_nec < necrosis_fraction) & (core if core_type == "non-enhancing" else ndimage.binary_erosion(core, iterations=k))
    enhancing = core & ~necrosis
    edema = ((f_ed < 1) | ndimage.binary_dilation(core, iterations=k)) & ~core & brain & (csf < 0.6)
    label = np.zeros(shape, np.int16)
    label[edema], label[enhancing], label[necrosis] = 2, 4, 1
    params.update(
        site=site, core_type=core_type, tumour_centre_mm=c.round(2).tolist(), core_radius_mm=round(r_core, 3),
        stretch=stretch.round(3).tolist(), lumpiness=round(lump, 3),
        necrosis_fraction=round(necrosis_fraction, 3), edema_factor=round(edema_factor, 3),
        voxels={name: int(np.count_nonzero(label == v)) for v, name in COMPARTMENTS.items()},
    )

    # 3. Intensities: tissue and tumour contrasts, per case.
    contrasts: dict[str, list[float]] = {}
    for tissue, base in BASE_CONTRAST.items():
        jitter = rng.uniform(1 - CONTRAST_JITTER, 1 + CONTRAST_JITTER, len(MODALITIES))
        contrasts[tissue] = [
            BASE_CONTRAST["wm"][m] if tissue == "wm" else BASE_CONTRAST["wm"][m] + (base[m] - BASE_CONTRAST["wm"][m]) * jitter[m]
            for m in range(len(MODALITIES))
        ]
    contrasts["csf"][3] = float(rng.uniform(0.08, 0.32))  # imperfect fluid suppression on FLAIR
    # Necrotic cores are dark on FLAIR, non-enhancing tumour bright: the whole range is seen.
    contrasts["necrosis"][3] = float(rng.uniform(0.45, 1.1))
    params["contrasts"] = {k: [round(float(x), 4) for x in v] for k, v in contrasts.items()}

    soft = lambda m, s: ndimage.gaussian_filter(m.astype(np.float32), s)  # noqa: E731
    s_nec, s_enh = soft(necrosis, 0.6 * k), soft(enhancing, 0.6 * k)
    s_core = np.clip(s_nec + s_enh, 0, 1)
    s_ed = soft(edema | core, 1.0 * k)
    channels = np.empty((len(MODALITIES),) + shape, np.float32)
    noise_levels, bias_levels, gammas = [], [], []
    # Thick slices: one axis blurred in every sequence (partial volume across slices).
    drawn = int(rng.integers(3)) if rng.random() < 0.3 else None   # drawn either way: the later draws stay the same
    sigma = float(rng.uniform(0.5, 1.5)) * k if drawn is not None else 0.0
    thick_axis, thick_sigma = (drawn, sigma) if thick_slices else (None, 0.0)
    for m in range(len(MODALITIES)):
        v = {k: contrasts[k][m] for k in contrasts}
        img = csf * v["csf"] + gm * v["gm"] + wm * v["wm"]
        img += float(rng.uniform(-0.08, 0.12)) * cerebellum * (gm + wm)
        img *= 1 + float(rng.uniform(0.02, 0.06)) * ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0 * k) * 3 * k ** 1.5
        heterogeneity = 1 + 0.08 * _smooth_field(rng, shape, sp, 10.0)
        img += s_ed * (v["edema"] - v["wm"]) * (0.8 + 0.2 * heterogeneity)
        img = img * (1 - s_core) + (s_enh * v["enhancing"] + s_nec * v["necrosis"]) * heterogeneity
        gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))  # the scanner's non-linear intensity response
        img = np.clip(img, 0, None) ** gamma
        bias = float(rng.uniform(0.05, 0.35))
        img *= np.exp(bias * _smooth_field(rng, shape, sp, 120.0))
        blur = float(rng.uniform(0.3, 0.8)) if rng.random() < 0.3 else 0.0
        if blur:
            img = ndimage.gaussian_filter(img, blur * k)
        if thick_axis is not None:
            img = ndimage.gaussian_filter1d(img, thick_sigma, axis=thick_axis)
        noise = float(rng.uniform(0.01, 0.06)) * v["wm"]
        img = img + noise * rng.standard_normal(shape).astype(np.float32)
        noise_levels.append(round(noise, 4))
        bias_levels.append(round(bias, 4))
        gammas.append(round(gamma, 4))
        channels[m] = _zscore_in(img, brain)
    params.update(noise_sd=noise_levels, bias_field=bias_levels, intensity_gamma=gammas, thick_slice_axis=thick_axis,
                  thick_slice_sigma_vox=round(thick_sigma, 3))

    name = case_name(seed, size)
    case = Case(channels, MODALITIES, anat.affine.copy(), label, BRATS_124, (), name)
    return SynthCase(case, modality_signature(channels, label, brain), seed, params, cerebellum)


def case_name(seed: int, size: str = "full") -> str:
    """The name of the generated case of ``seed`` at ``size``."""
    return f"synth-{int(seed):08d}" if size == "full" else f"synth-{size}-{int(seed):08d}"


def _zscore_in(img: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The image z-scored over the brain, zero outside."""
    values = img[brain]
    out = (img - values.mean()) / (values.std() + 1e-8)
    out[~brain] = 0
    return out.astype(np.float32)


def modality_signature(channels: np.ndarray, label: np.ndarray, brain: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per tumour class and modality: (class mean - normal brain mean) / normal brain SD."""
    if brain is None:
        brain = np.any(channels != 0, axis=0)
    normal = brain & (label == 0)
    signature: dict[str, dict[str, float]] = {}
    for value, name in COMPARTMENTS.items():
        inside = label == value
        if not inside.any():
            continue
        signature[name] = {
            modality: round(float((ch[inside].mean() - ch[normal].mean()) / (ch[normal].std() + 1e-8)), 4)
            for modality, ch in zip(MODALITIES, channels)
        }
    return signature


def lesion_free_case(seed: int = 0) -> Case:
    """The generator's MNI152 anatomy with its base contrasts, a little noise and no tumour: a healthy brain, 2 mm.

    Never seen by the bundled tumour model (every training case has a tumour): tests and measures the domain check.
    """
    anatomy = _anatomy("full")
    rng = np.random.default_rng(seed)
    brain = anatomy.mask > 0.5
    channels = np.zeros((len(MODALITIES),) + anatomy.shape, np.float32)
    for m in range(len(MODALITIES)):
        contrast = {tissue: BASE_CONTRAST[tissue][m] for tissue in ("csf", "gm", "wm")}
        image = anatomy.csf * contrast["csf"] + anatomy.gm * contrast["gm"] + anatomy.wm * contrast["wm"]
        image = image + 0.03 * contrast["wm"] * rng.standard_normal(anatomy.shape).astype(np.float32)
        channels[m] = _zscore_in(image, brain)
    return Case(channels, MODALITIES, anatomy.affine.copy(), name="mni152-lesion-free")
