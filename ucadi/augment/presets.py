"""CycleGAN presets: network widths, slice size and the training schedule as data.

`paper` is the papers' setting (Zhu et al. 2017's ResNet generator with 9 residual blocks,
70x70 PatchGAN, batch 12, 200 epochs: Adam lr 2e-4 for 100 epochs then a linear decay to 0)
at the classifier's 128x128 input. `cpu-small` keeps the architecture at the `cpu-small`
classifier's 32x32 input with narrow layers and a short schedule (minutes on 2 cores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ucadi.errors import UcadiError


class AugmentError(UcadiError):
    """Bad augmentation settings, data or model folder."""


@dataclass(frozen=True)
class CycleGANPreset:
    """Architecture and schedule of one CycleGAN training run."""

    name: str
    size: int  # slices are resized to size x size (the classifier preset's input)
    generator_width: int  # channels of the generator's first layer (ngf)
    residual_blocks: int
    discriminator_width: int  # channels of the PatchGAN's first layer (ndf)
    discriminator_layers: int  # strided layers of the PatchGAN (3: 70x70 receptive field)
    batch_size: int
    epochs: int  # total epochs; lr is constant for `constant_epochs`, then decays to 0
    constant_epochs: int
    lr: float
    beta1: float
    cycle_weight: float  # lambda of the cycle-consistency L1 loss
    identity_weight: float  # identity loss weight, as a fraction of cycle_weight
    pool_size: int  # history of generated images the discriminators see (Shrivastava et al.)
    # Slices taken from each training study, evenly spaced (0: every slice).
    slices_per_study: int

    def __post_init__(self) -> None:
        if self.size % 4:
            raise AugmentError(f"CycleGAN slice size must be a multiple of 4 (two stride-2 "
                               f"down-samplings); got {self.size}")
        if not 0 <= self.constant_epochs <= self.epochs or self.epochs < 1:
            raise AugmentError(f"need 0 <= constant_epochs <= epochs and epochs >= 1; got "
                               f"{self.constant_epochs} and {self.epochs}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based `epoch`: constant, then linear decay reaching 0 after the
        last epoch (the CycleGAN reference's `linear` policy)."""
        decay = self.epochs - self.constant_epochs
        if epoch < self.constant_epochs or decay == 0:
            return self.lr
        return self.lr * max(0.0, 1.0 - (epoch + 1 - self.constant_epochs) / (decay + 1))

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly copy."""
        return asdict(self)


PRESETS: dict[str, CycleGANPreset] = {
    "paper": CycleGANPreset("paper", size=128, generator_width=64, residual_blocks=9,
                            discriminator_width=64, discriminator_layers=3, batch_size=12,
                            epochs=200, constant_epochs=100, lr=2e-4, beta1=0.5,
                            cycle_weight=10.0, identity_weight=0.5, pool_size=50,
                            slices_per_study=0),
    "cpu-small": CycleGANPreset("cpu-small", size=32, generator_width=8, residual_blocks=3,
                                discriminator_width=8, discriminator_layers=2, batch_size=12,
                                epochs=20, constant_epochs=10, lr=2e-4, beta1=0.5,
                                cycle_weight=10.0, identity_weight=0.5, pool_size=50,
                                slices_per_study=8),
}


def get_preset(name: str) -> CycleGANPreset:
    """The preset called `name`, or an AugmentError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise AugmentError(f"unknown CycleGAN preset {name!r}; choose one of: "
                           f"{', '.join(PRESETS)}") from None
