"""A chest phantom in Hounsfield units: body wall, lungs with vessels and airways, mediastinum,
heart and aorta, spine and ribs, upper abdomen and the scanner table.

Coordinates follow DICOM's patient system: x toward the patient's left, y posterior, z superior;
the volume is (z, y, x) with z ascending. Shapes are analytic (ellipses and tubes in mm) so any
matrix size or slice spacing gives the same anatomy; fine structure (vessels, bronchi, texture)
comes from smooth random fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Tissue values (HU) of a non-contrast chest CT.
AIR_HU = -1000.0
LUNG_PARENCHYMA_HU = -860.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 35.0
MUSCLE_HU = 45.0
BLOOD_HU = 40.0
LIVER_HU = 58.0
CANCELLOUS_BONE_HU = 250.0
CORTICAL_BONE_HU = 650.0
CARTILAGE_HU = 120.0
TABLE_HU = 180.0
# Iodine contrast: blood pool and enhancing organs (venous/arterial mix of a chest protocol).
CONTRAST_BLOOD_HU = 230.0
CONTRAST_LIVER_HU = 105.0
CONTRAST_PARENCHYMA_BOOST_HU = 15.0
# Dependent (posterior) lung is denser from gravity: perfusion and partial collapse.
DEPENDENT_DENSITY_HU = 60.0
# Anatomical layer thicknesses (mm).
FAT_LAYER_MM = 14.0
MUSCLE_LAYER_MM = 12.0
RIB_LAYER_MM = 9.0
RIB_PITCH_MM = 30.0
RIB_DESCENT_MM = 45.0
DISC_PITCH_MM = 27.0
DISC_THICKNESS_MM = 6.0


def smooth_noise(shape: tuple[int, int, int], sigma_vox: tuple[float, float, float],
                 rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox,
                                    mode="wrap", truncate=3.0)
    return field / max(float(field.std()), 1e-6)


@dataclass
class Chest:
    """A phantom: HU volume plus the anatomy lesions need (lung labels, radius, bronchi)."""

    hu: np.ndarray
    lung: np.ndarray
    lung_radius: np.ndarray
    bronchi: np.ndarray
    vessels: np.ndarray
    z_mm: np.ndarray
    y_mm: np.ndarray
    x_mm: np.ndarray
    slice_mm: float
    pixel_mm: float
    lung_centre_y_mm: float
    lung_depth_mm: float

    def sigma_vox(self, sigma_mm: float) -> tuple[float, float, float]:
        """A length in mm as a per-axis Gaussian sigma in voxels."""
        return (sigma_mm / self.slice_mm, sigma_mm / self.pixel_mm, sigma_mm / self.pixel_mm)


def _disc(y: np.ndarray, x: np.ndarray, cy: float, cx: float, radius: float) -> np.ndarray:
    return (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2


@dataclass
class _Torso:
    """Grid coordinates and the patient's body habitus shared by every anatomy step."""

    z_mm: np.ndarray
    zf: np.ndarray
    y: np.ndarray
    x: np.ndarray
    half_width: float
    half_depth: float
    y0: float
    rho: np.ndarray
    inner: float
    thorax: float


def _torso(slices: int, matrix: int, pixel_mm: float, slice_mm: float,
           rng: np.random.Generator) -> _Torso:
    z_mm = np.arange(slices, dtype=np.float32) * slice_mm
    y_mm = (np.arange(matrix, dtype=np.float32) - (matrix - 1) / 2) * pixel_mm
    zf = (z_mm / z_mm[-1])[:, None, None]
    y, x = y_mm[None, :, None], y_mm[None, None, :]
    half_width = min(rng.uniform(135, 172), 0.88 * matrix * pixel_mm / 2)
    half_depth = half_width * rng.uniform(0.62, 0.74)
    y0 = rng.uniform(-18, -6)
    taper = 0.93 + 0.07 * np.sin(np.pi * zf)
    rho = np.sqrt((x / (half_width * taper)) ** 2 + ((y - y0) / (half_depth * taper)) ** 2)
    return _Torso(z_mm=z_mm, zf=zf, y=y, x=x, half_width=half_width, half_depth=half_depth,
                  y0=y0, rho=rho,
                  inner=1 - (FAT_LAYER_MM + MUSCLE_LAYER_MM) / half_width,
                  thorax=1 - (FAT_LAYER_MM + MUSCLE_LAYER_MM + RIB_LAYER_MM) / half_width)


def _mediastinum(t: _Torso, hu: np.ndarray, blood: float) -> tuple[np.ndarray, np.ndarray]:
    """Heart low and anterior-left; aorta ascending, arch, descending left of the spine."""
    x, y, zf, w, d = t.x, t.y, t.zf, t.half_width, t.half_depth
    heart = (((x - 0.12 * w) / (0.36 * w)) ** 2 + ((y - t.y0 + 0.22 * d) / (0.45 * d)) ** 2
             + ((zf - 0.36) / 0.15) ** 2) < 1
    descending = _disc(y, x, t.y0 + 0.5 * d, 0.14 * w, 11) & (zf > 0.12) & (zf < 0.82)
    ascending = _disc(y, x, t.y0 - 0.12 * d, 0.03 * w, 14) & (zf > 0.42) & (zf < 0.82)
    arch_t = np.clip((y - (t.y0 - 0.12 * d)) / (0.62 * d), 0, 1)
    arch = (np.abs(x - (0.03 + 0.11 * arch_t) * w) < 12) & (y > t.y0 - 0.2 * d) \
        & (y < t.y0 + 0.58 * d) & (zf > 0.78) & (zf < 0.84)
    aorta = descending | ascending | arch
    hu[heart] = blood
    hu[aorta] = blood
    return heart, aorta


def _lungs(t: _Torso,
           blocked: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Lung labels (1 right, 2 left), normalised radius, right dome; ellipses tapering to the
    apex over a domed diaphragm (the right dome higher, over the liver)."""
    x, y, zf, w = t.x, t.y, t.zf, t.half_width
    apex = np.sqrt(np.clip((0.97 - zf) / 0.3, 0, 1))
    lung = np.zeros(blocked.shape, dtype=np.uint8)
    lung_radius = np.zeros(blocked.shape, dtype=np.float32)
    cy = t.y0 + 0.1 * t.half_depth
    ay = 0.72 * t.half_depth
    dome_right = np.zeros_like(y * x)
    for label, side, dome_top in ((1, -1.0, 0.31), (2, 1.0, 0.27)):
        cx = side * 0.47 * w
        ax = (0.37 if side < 0 else 0.34) * w
        radius = np.sqrt(((x - cx) / (ax * apex + 1e-3)) ** 2
                         + ((y - cy) / (ay * apex + 1e-3)) ** 2)
        in_plane = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
        dome = 0.1 + (dome_top - 0.1) * np.clip(1 - in_plane ** 2, 0, 1) \
            - 0.05 * np.clip((y - cy) / ay, 0, 1)
        if side < 0:
            dome_right = dome
        inside = (radius < 1) & (zf > dome) & (zf < 0.97) & (t.rho < t.thorax) & ~blocked
        lung[inside] = label
        lung_radius[inside] = radius[inside]
    return lung, lung_radius, dome_right, float(cy), float(ay)


def _airways(t: _Torso, hu: np.ndarray, in_lung: np.ndarray) -> None:
    """Trachea down to the carina, main bronchi out to the hila."""
    x, y, zf = t.x, t.y, t.zf
    trachea_y = t.y0 + 0.05 * t.half_depth
    lumen = _disc(y, x, trachea_y, 0.0, 9) & (zf > 0.62)
    for side in (-1.0, 1.0):
        along = np.clip((0.62 - zf) / 0.1, 0, 1)
        lumen = lumen | (_disc(y, x, trachea_y + 8 * along, side * 0.28 * t.half_width * along, 6)
                         & (zf > 0.52) & (zf <= 0.62))
    wall = ndimage.binary_dilation(lumen, iterations=1) & ~lumen & ~in_lung
    hu[wall] = SOFT_TISSUE_HU + 15
    hu[lumen] = AIR_HU


def _skeleton(t: _Torso, hu: np.ndarray) -> None:
    """Vertebrae (cortex, discs, canal, posterior elements), ribs and sternum."""
    x, y, zf, d = t.x, t.y, t.zf, t.half_depth
    spine_y = t.y0 + 0.72 * d
    body_r = 17.0
    disc_level = (np.mod(t.z_mm, DISC_PITCH_MM) < DISC_THICKNESS_MM)[:, None, None]
    vertebra = _disc(y, x, spine_y, 0, body_r) & np.ones_like(zf, dtype=bool)
    cortex = vertebra & ~_disc(y, x, spine_y, 0, body_r - 2.5)
    hu[vertebra & ~disc_level] = CANCELLOUS_BONE_HU
    hu[cortex & ~disc_level] = CORTICAL_BONE_HU
    hu[vertebra & disc_level] = 90.0
    hu[_disc(y, x, spine_y + body_r + 9, 0, 8) & np.ones_like(zf, dtype=bool)] = 15.0
    posterior = (np.abs(x) < 6) & (y > spine_y + body_r + 17) & (y < spine_y + body_r + 45)
    hu[posterior & (t.rho < 1)] = CORTICAL_BONE_HU - 150
    # Ribs are ovals in the chest wall that descend from back to front.
    angle = np.abs(np.arctan2(x, -(y - t.y0)))
    ring = (t.rho >= t.thorax) & (t.rho < t.inner)
    phase = np.mod(t.z_mm[:, None, None] + RIB_DESCENT_MM * (angle / np.pi), RIB_PITCH_MM)
    hu[ring & (phase < 0.32 * RIB_PITCH_MM) & (angle > 0.45) & (zf > 0.18)] = CORTICAL_BONE_HU
    sternum = (t.rho >= t.thorax - 0.02) & (t.rho < t.inner) & (angle < 0.2) & (zf > 0.35) \
        & (zf < 0.9)
    hu[sternum] = CARTILAGE_HU + 200


def _lung_fields(t: _Torso, lung: np.ndarray, lung_radius: np.ndarray, cy: float, ay: float,
                 blood: float, contrast: bool, slice_mm: float, pixel_mm: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lung HU (parenchyma, vessels, bronchi) and the vessel and bronchus strength fields."""
    shape = lung.shape
    texture = smooth_noise(shape, (1.0, 1.0, 1.0), rng)
    dependent = np.clip((t.y - cy) / ay, 0, 1) ** 2
    parenchyma = LUNG_PARENCHYMA_HU + DEPENDENT_DENSITY_HU * dependent + 12 * texture
    if contrast:
        parenchyma = parenchyma + CONTRAST_PARENCHYMA_BOOST_HU
    # Vessels and bronchi: tubes where two smooth fields both cross zero; thicker centrally.
    sigma = (3.0 / slice_mm, 3.0 / pixel_mm, 3.0 / pixel_mm)
    first, second, third = (smooth_noise(shape, sigma, rng) for _ in range(3))
    calibre = 0.1 + 0.22 * np.clip(1 - lung_radius, 0, 1)
    vessels = np.exp(-(first ** 2 + second ** 2) / (2 * calibre ** 2)).astype(np.float32)
    bronchi = np.exp(-(first ** 2 + third ** 2) / (2 * (0.8 * calibre) ** 2)).astype(np.float32)
    bronchi *= np.clip(1.3 - lung_radius, 0, 1)
    lung_hu = parenchyma + vessels * (blood - parenchyma)
    lung_hu = np.where(bronchi > 0.55, AIR_HU, lung_hu + np.clip(bronchi - 0.25, 0, 0.3) * 600)
    outside = lung == 0
    vessels[outside] = 0
    bronchi[outside] = 0
    return lung_hu.astype(np.float32), vessels, bronchi


def build_chest(slices: int, matrix: int, pixel_mm: float, slice_mm: float, contrast: bool,
                rng: np.random.Generator) -> Chest:
    """Build one patient's chest phantom on a (slices, matrix, matrix) grid."""
    t = _torso(slices, matrix, pixel_mm, slice_mm, rng)
    blood = CONTRAST_BLOOD_HU if contrast else BLOOD_HU
    hu = np.full((slices, matrix, matrix), AIR_HU, dtype=np.float32)
    hu[t.rho < 1] = FAT_HU
    hu[t.rho < 1 - FAT_LAYER_MM / t.half_width] = MUSCLE_HU
    hu[t.rho < t.inner] = SOFT_TISSUE_HU
    heart, aorta = _mediastinum(t, hu, blood)
    lung, lung_radius, dome_right, cy, ay = _lungs(t, heart | aorta)
    in_lung = lung > 0
    lung_hu, vessels, bronchi = _lung_fields(t, lung, lung_radius, cy, ay, blood, contrast,
                                             slice_mm, pixel_mm, rng)
    hu[in_lung] = lung_hu[in_lung]
    _airways(t, hu, in_lung)
    # Upper abdomen under the right dome: liver; a gastric air bubble on the left.
    liver = (t.zf < dome_right) & (t.rho < t.inner) & (t.x < 0.25 * t.half_width) & ~in_lung \
        & ~aorta & ~heart
    hu[liver] = CONTRAST_LIVER_HU if contrast else LIVER_HU
    stomach = (((t.x - 0.42 * t.half_width) / 35) ** 2
               + ((t.y - t.y0 + 0.1 * t.half_depth) / 28) ** 2 + ((t.zf - 0.08) / 0.06) ** 2) < 1
    hu[stomach & (t.rho < t.inner)] = AIR_HU
    _skeleton(t, hu)
    # The table under the patient, gently curved.
    table_top = t.y0 + t.half_depth + 10 + 0.0008 * t.x ** 2
    table = (t.y > table_top) & (t.y < table_top + 12) & (np.abs(t.x) < 1.05 * t.half_width)
    hu[np.broadcast_to(table, hu.shape)] = TABLE_HU
    axis = (np.arange(matrix, dtype=np.float32) - (matrix - 1) / 2) * pixel_mm
    return Chest(hu=hu, lung=lung, lung_radius=lung_radius, bronchi=bronchi, vessels=vessels,
                 z_mm=t.z_mm, y_mm=axis, x_mm=axis.copy(), slice_mm=slice_mm, pixel_mm=pixel_mm,
                 lung_centre_y_mm=cy, lung_depth_mm=ay)
