"""Lesions by diagnosis, painted into a chest phantom, with a lesion mask for checking Grad-CAM.

- COVID-19: bilateral, peripheral, posterior and basal multifocal ground-glass opacities, some
  with crazy paving (septal thickening inside ground glass), consolidation in severe cases;
  severity I/II/III by the involved lung fraction.
- Bacterial: lobar/segmental consolidation, usually unilateral, with air bronchograms; some
  patchy bronchopneumonia.
- Other viral: diffuse, central, peribronchovascular ground glass and bronchial wall thickening.
- Healthy: none, but dependent (posterior) density and small nodules occur, as in real scans.
Overlaps are deliberate: mild COVID-19 can be small and central, viral can reach the periphery,
bacterial can be bilateral and patchy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ucadi.ct.synth.phantom import Chest, smooth_noise

# Mask codes (uint8) of lesion_mask.npy.
MASK_GROUND_GLASS = 1
MASK_CRAZY_PAVING = 2
MASK_CONSOLIDATION = 3
# Lesion appearance (HU).
GROUND_GLASS_HU = (-620.0, -450.0)
VIRAL_GROUND_GLASS_HU = (-720.0, -600.0)
CONSOLIDATION_HU = (-40.0, 45.0)
SEPTAL_THICKENING_HU = 220.0
AIR_BRONCHOGRAM_HU = -900.0
# COVID-19 severity grades by involved lung fraction (first paper's I/II/III grading).
SEVERITY_LUNG_FRACTION = {1: (0.03, 0.09), 2: (0.09, 0.2), 3: (0.2, 0.4)}
SEVERITY_LESION_RADIUS_MM = {1: (10.0, 20.0), 2: (14.0, 30.0), 3: (20.0, 42.0)}
MAX_LESIONS = 40


def _pick_voxel(weights: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    return _VoxelSampler(weights).pick(rng)


class _VoxelSampler:
    """Draws voxel positions with probability proportional to a weight volume."""

    def __init__(self, weights: np.ndarray) -> None:
        self.shape = weights.shape
        self.cumulative = np.cumsum(weights.ravel(), dtype=np.float64)

    def pick(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """One voxel index (z, y, x)."""
        index = int(np.searchsorted(self.cumulative, rng.random() * self.cumulative[-1], "right"))
        return tuple(int(v) for v in np.unravel_index(min(index, self.cumulative.size - 1),
                                                      self.shape))  # type: ignore[return-value]


def _blob(chest: Chest, centre: tuple[int, int, int], radius_mm: np.ndarray,
          irregular: np.ndarray | None) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """A soft, irregular ellipsoid clipped to the lungs: (box, weight in [0,1], core shape)."""
    spacing = np.array([chest.slice_mm, chest.pixel_mm, chest.pixel_mm])
    reach = np.ceil(radius_mm * 1.4 / spacing).astype(int)
    box = tuple(slice(max(0, c - r), min(n, c + r + 1))
                for c, r, n in zip(centre, reach, chest.hu.shape, strict=True))
    axes = [(np.arange(s.start, s.stop) - c) * d / r
            for s, c, d, r in zip(box, centre, spacing, radius_mm, strict=True)]
    distance = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2
                       + axes[2][None, None, :] ** 2)
    shape = 1.0 - distance
    if irregular is not None:
        shape = shape + 0.35 * irregular[box]
    weight = np.clip(shape / 0.3, 0, 1) * (chest.lung[box] > 0)
    return box, weight.astype(np.float32), shape


def add_covid(chest: Chest, mask: np.ndarray, severity: int, rng: np.random.Generator) -> None:
    """Multifocal peripheral posterior-basal ground glass (+ crazy paving, consolidation)."""
    target = rng.uniform(*SEVERITY_LUNG_FRACTION[severity])
    irregular = smooth_noise(chest.hu.shape, chest.sigma_vox(6.0), rng)
    septa = np.abs(smooth_noise(chest.hu.shape, chest.sigma_vox(2.5), rng)) < 0.25
    zf = (chest.z_mm / chest.z_mm[-1])[:, None, None]
    posterior = np.clip((chest.y_mm[None, :, None] - chest.lung_centre_y_mm)
                        / chest.lung_depth_mm + 1, 0, 2)
    # Mild cases are sometimes central (overlapping other viral pneumonia).
    peripheral_bias = 6.0 if rng.random() > 0.25 / severity else 0.5
    base = (chest.lung > 0) * np.exp(peripheral_bias * (chest.lung_radius - 1)) \
        * (0.5 + posterior) * (1.6 - zf)
    radius_range = SEVERITY_LESION_RADIUS_MM[severity]
    consolidating = severity >= 2 and rng.random() < (0.3 if severity == 2 else 0.75)
    samplers = [_VoxelSampler(base * (chest.lung == side)) for side in (1, 2)]
    lung_voxels = max(1, int((chest.lung > 0).sum()))
    involved = 0
    first_side = int(rng.integers(0, 2))
    for count in range(MAX_LESIONS):
        # Bilateral: alternate lungs, the first lesion's side chosen at random.
        centre = samplers[(first_side + count) % 2].pick(rng)
        radius = rng.uniform(*radius_range) * rng.uniform(0.7, 1.3, size=3)
        box, weight, shape = _blob(chest, centre, radius, irregular)
        hu = chest.hu[box]
        ground_glass = hu + weight * (rng.uniform(*GROUND_GLASS_HU) - hu)
        # Ground glass leaves vessels visible: never darker than what was there.
        painted = np.maximum(hu, ground_glass)
        code = np.where(weight > 0.5, MASK_GROUND_GLASS, 0).astype(np.uint8)
        if rng.random() < 0.35:
            paving = septa[box] & (weight > 0.5)
            painted = np.where(paving, painted + SEPTAL_THICKENING_HU * weight, painted)
            code[weight > 0.5] = MASK_CRAZY_PAVING
        if consolidating and rng.random() < 0.5:
            core = (shape > 0.45) & (weight > 0.9)
            painted = np.where(core, rng.uniform(*CONSOLIDATION_HU), painted)
            code[core] = MASK_CONSOLIDATION
        chest.hu[box] = painted
        before = int(np.count_nonzero(mask[box]))
        mask[box] = np.maximum(mask[box], code)
        involved += int(np.count_nonzero(mask[box])) - before
        if involved / lung_voxels >= target:
            break


def _consolidate(chest: Chest, mask: np.ndarray, region: np.ndarray,
                 rng: np.random.Generator) -> None:
    """Fill a region with consolidation, keeping its bronchi aerated (air bronchograms)."""
    level = np.float32(rng.uniform(*CONSOLIDATION_HU))
    soft = ndimage.gaussian_filter(region.astype(np.float32), chest.sigma_vox(2.0))
    weight = np.clip(soft * 1.4, 0, 1) * (chest.lung > 0)
    filled = chest.hu + weight * (level - chest.hu)
    bronchogram = region & (chest.bronchi > 0.45)
    chest.hu[:] = np.where(bronchogram, AIR_BRONCHOGRAM_HU, filled)
    mask[(weight > 0.5) & (mask == 0)] = MASK_CONSOLIDATION
    halo = (weight > 0.15) & (weight <= 0.5) & (mask == 0)
    mask[halo] = MASK_GROUND_GLASS


def add_bacterial(chest: Chest, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Lobar/segmental consolidation cut by a fissure plane, or patchy bronchopneumonia."""
    z = chest.z_mm[:, None, None]
    y = chest.y_mm[None, :, None]
    x = chest.x_mm[None, None, :]
    sides = [int(rng.integers(1, 3))]
    if rng.random() < 0.2:
        sides.append(3 - sides[0])
    for number, side in enumerate(sides):
        in_side = chest.lung == side
        zf = (chest.z_mm / chest.z_mm[-1])[:, None, None]
        # Lower lobes are the commonest site of lobar pneumonia.
        weights = in_side * np.where(zf < 0.55, 3.0, 1.0)
        k, i, j = _pick_voxel(weights.astype(np.float64), rng)
        centre = np.array([chest.z_mm[k], chest.y_mm[i], chest.x_mm[j]])
        if rng.random() < 0.25:
            irregular = smooth_noise(chest.hu.shape, chest.sigma_vox(5.0), rng)
            near = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < 60.0 ** 2
            region = near & in_side & (irregular + 2.5 * chest.bronchi > 1.3)
        else:
            radius = rng.uniform(45, 85) * (0.6 if number else 1.0)
            normal = rng.normal(size=3)
            normal /= np.linalg.norm(normal)
            offset = rng.uniform(0.0, 0.6) * radius
            distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
            across = (z - centre[0]) * normal[0] + (y - centre[1]) * normal[1] \
                + (x - centre[2]) * normal[2]
            region = (distance < radius) & (across < offset) & in_side
        _consolidate(chest, mask, region, rng)


def add_other_viral(chest: Chest, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Diffuse central peribronchovascular ground glass and thickened bronchial walls."""
    target = rng.uniform(0.06, 0.22)
    bundles = ndimage.gaussian_filter(chest.vessels + chest.bronchi, chest.sigma_vox(4.0))
    bundles /= max(float(bundles.max()), 1e-6)
    patches = smooth_noise(chest.hu.shape, chest.sigma_vox(10.0), rng)
    centrality = 1.0 - chest.lung_radius
    # Some cases reach the periphery (overlapping COVID-19's distribution).
    central_weight = rng.uniform(0.4, 2.0)
    score = 2.0 * bundles + central_weight * centrality + 0.5 * patches
    in_lung = chest.lung > 0
    threshold = np.quantile(score[in_lung], 1.0 - target)
    weight = np.clip((score - threshold) / 0.25 + 0.5, 0, 1) * in_lung
    level = rng.uniform(*VIRAL_GROUND_GLASS_HU)
    chest.hu[:] = np.maximum(chest.hu, chest.hu + weight * (level - chest.hu))
    walls = in_lung & (chest.bronchi > 0.2) & (chest.bronchi < 0.5) & (centrality > 0.3)
    chest.hu[walls] += 180.0
    mask[(weight > 0.5) & (mask == 0)] = MASK_GROUND_GLASS


def add_healthy_findings(chest: Chest, rng: np.random.Generator) -> None:
    """Non-lesion findings of normal scans: dependent density, an occasional small nodule."""
    in_lung = chest.lung > 0
    if rng.random() < 0.35:
        posterior = (chest.y_mm[None, :, None] - chest.lung_centre_y_mm) / chest.lung_depth_mm
        band = in_lung & (chest.lung_radius > 0.8) & (posterior > 0.45)
        chest.hu[band] += rng.uniform(0.3, 0.6) * (-560.0 - chest.hu[band]).clip(0)
    if rng.random() < 0.25:
        centre = _pick_voxel(in_lung.astype(np.float64), rng)
        box, weight, _ = _blob(chest, centre, np.full(3, rng.uniform(3.0, 6.0)), None)
        chest.hu[box] = chest.hu[box] + weight * (40.0 - chest.hu[box])


def paint_lesions(chest: Chest, label: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Paint the diagnosis' lesions into the chest; return the uint8 lesion mask (z, y, x)."""
    mask = np.zeros(chest.hu.shape, dtype=np.uint8)
    if label == "covid":
        add_covid(chest, mask, severity, rng)
    elif label == "bacterial":
        add_bacterial(chest, mask, rng)
    elif label == "other_viral":
        add_other_viral(chest, mask, rng)
    else:
        add_healthy_findings(chest, rng)
    return mask
