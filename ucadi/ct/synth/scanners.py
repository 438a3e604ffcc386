"""Scanner profiles: how a site's CT scanners differ in image quality and DICOM encoding.

Noise, reconstruction sharpness, HU calibration offset, slice thickness and matrix differ between
vendors and kernels; so do DICOM habits (signed or unsigned storage, padding values, file naming,
a scout image in the series folder). A model trained on one site's scanners meets the others'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Reconstruction circle: pixels outside it are padding in real scanners.
RECONSTRUCTION_CIRCLE_FRACTION = 0.98
# Correlation length of CT noise (filtered back projection makes it grainy, not white), pixels.
NOISE_GRAIN_PX = 0.7


@dataclass(frozen=True)
class ScannerProfile:
    """One scanner model with its reconstruction and DICOM habits."""

    name: str
    manufacturer: str
    model: str
    kernel: str
    kvp: float
    noise_hu: float
    blur_mm: float
    sharpen: float
    hu_offset: float
    slice_thickness_mm: float
    native_matrix: int
    small_matrix: int
    fov_mm: float
    signed_storage: bool
    padding_stored: int | None
    file_pattern: str
    writes_localizer: bool
    private_creator: str

    def reconstruct(self, hu: np.ndarray, pixel_mm: float, slice_mm: float,
                    rng: np.random.Generator) -> np.ndarray:
        """Apply this scanner's blur/sharpening, partial volume, grainy noise and calibration."""
        in_plane = self.blur_mm / pixel_mm
        # Partial-volume averaging across a slice's thickness (thicker slices smear more).
        through_plane = 0.35 * max(self.slice_thickness_mm, slice_mm) / slice_mm
        image = ndimage.gaussian_filter(hu, (through_plane, in_plane, in_plane), mode="nearest")
        if self.sharpen > 0:
            smooth = ndimage.gaussian_filter(image, (0, 1.2, 1.2), mode="nearest")
            image = image + self.sharpen * (image - smooth)
        grain = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32),
                                        (0, NOISE_GRAIN_PX, NOISE_GRAIN_PX))
        grain *= self.noise_hu / max(float(grain.std()), 1e-6)
        return (image + grain + self.hu_offset).astype(np.float32)

    def field_of_view_mask(self, rows: int, columns: int) -> np.ndarray:
        """True inside the reconstruction circle of a (rows, columns) image."""
        y = (np.arange(rows) - (rows - 1) / 2) / (rows / 2)
        x = (np.arange(columns) - (columns - 1) / 2) / (columns / 2)
        return (y[:, None] ** 2 + x[None, :] ** 2) <= RECONSTRUCTION_CIRCLE_FRACTION ** 2


def _profile(name: str, manufacturer: str, model: str, kernel: str, *, kvp: float = 120.0,
             noise: float, blur: float, sharpen: float = 0.0, offset: float = 0.0,
             thickness: float = 1.25, small_matrix: int = 128, fov: float = 360.0,
             signed: bool = True, padding: int | None = -2000, pattern: str = "IM{index:04d}.dcm",
             localizer: bool = False) -> ScannerProfile:
    # Vendors keep their own private data elements; loaders must read around them.
    creator = {"GE MEDICAL SYSTEMS": "GEMS_IDEN_01", "SIEMENS": "SIEMENS CT VA0  COAD",
               "Philips": "ELSCINT1", "TOSHIBA": "TOSHIBA_MEC_CT3", "CANON_MEC": "TOSHIBA_MEC_CT3",
               "UIH": "Image Private Header"}[manufacturer]
    return ScannerProfile(name=name, manufacturer=manufacturer, model=model, kernel=kernel,
                          kvp=kvp, noise_hu=noise, blur_mm=blur, sharpen=sharpen, hu_offset=offset,
                          slice_thickness_mm=thickness, native_matrix=512,
                          small_matrix=small_matrix, fov_mm=fov, signed_storage=signed,
                          padding_stored=padding, file_pattern=pattern, writes_localizer=localizer,
                          private_creator=creator)


SCANNERS: dict[str, ScannerProfile] = {p.name: p for p in [
    # Wuhan main campus: a GE and a Siemens scanner, thin-slice non-contrast chest protocol.
    _profile("ge-discovery-750", "GE MEDICAL SYSTEMS", "Discovery CT750 HD", "LUNG", noise=14,
             blur=0.5, sharpen=0.3, offset=4, thickness=1.25, small_matrix=128,
             signed=True, padding=-2000, pattern="IM{index:05d}", localizer=True),
    _profile("siemens-definition-as", "SIEMENS", "SOMATOM Definition AS", "B70f", noise=20,
             blur=0.4, sharpen=0.6, offset=-6, thickness=1.0, small_matrix=144, fov=380,
             signed=False, padding=None, pattern="{sop_uid}.dcm"),
    # Optical Valley: a Philips scanner with a smooth kernel and a positive calibration drift.
    _profile("philips-brilliance-ict", "Philips", "Brilliance iCT", "B", noise=11, blur=0.9,
             offset=12, thickness=1.0, small_matrix=112, fov=350, signed=True, padding=-1024,
             pattern="CT.{index}", localizer=True),
    # Sino-French: a Toshiba and a United Imaging scanner.
    _profile("toshiba-aquilion-one", "TOSHIBA", "Aquilion ONE", "FC52", noise=16, blur=0.6,
             sharpen=0.2, offset=-10, thickness=1.0, small_matrix=128, signed=True,
             padding=-2000, pattern="I{index:04d}0"),
    _profile("uih-uct-760", "UIH", "uCT 760", "B_SHARP_C", noise=18, blur=0.5, sharpen=0.4,
             offset=8, thickness=1.2, small_matrix=160, fov=400, signed=True, padding=-2000,
             pattern="{index:04d}.dcm"),
    # UK (NCCID): many vendors and models, mostly contrast-enhanced, thicker slices.
    _profile("siemens-force", "SIEMENS", "SOMATOM Force", "Br40d", noise=10, blur=0.7,
             offset=-3, thickness=2.0, small_matrix=128, signed=False, padding=None,
             pattern="{sop_uid}.dcm"),
    _profile("ge-revolution", "GE MEDICAL SYSTEMS", "Revolution CT", "STANDARD", noise=12,
             blur=0.8, offset=6, thickness=2.5, small_matrix=112, padding=-2000,
             pattern="IM{index:05d}", localizer=True),
    _profile("canon-aquilion-prime", "CANON_MEC", "Aquilion Prime SP", "FC08", noise=15,
             blur=0.9, offset=-14, thickness=3.0, small_matrix=96, signed=True, padding=-2048,
             pattern="I{index:04d}0"),
    _profile("philips-ingenuity", "Philips", "Ingenuity CT", "B", noise=13, blur=0.8, offset=15,
             thickness=2.0, small_matrix=128, fov=380, signed=True, padding=-1024,
             pattern="CT.{index}"),
    _profile("ge-optima-660", "GE MEDICAL SYSTEMS", "Optima CT660", "SOFT", noise=22, blur=1.0,
             offset=-8, thickness=5.0, small_matrix=96, padding=-2000, pattern="IM{index:05d}"),
    _profile("siemens-edge", "SIEMENS", "SOMATOM Edge Plus", "Bl57d", noise=17, blur=0.5,
             sharpen=0.5, offset=2, thickness=1.5, small_matrix=144, signed=False, padding=None,
             pattern="{sop_uid}.dcm", localizer=True),
    # Hold-out hospitals: scanners no training site has.
    _profile("ge-lightspeed-vct", "GE MEDICAL SYSTEMS", "LightSpeed VCT", "BONE", noise=24,
             blur=0.4, sharpen=0.5, offset=10, thickness=1.25, small_matrix=128, padding=-2000,
             pattern="IM{index:05d}"),
    _profile("siemens-emotion", "SIEMENS", "SOMATOM Emotion 16", "B60f", noise=28, blur=0.6,
             sharpen=0.3, offset=-18, thickness=1.5, small_matrix=112, signed=False,
             padding=None, pattern="{sop_uid}.dcm"),
]}
