"""Model presets: input size and widths as data, one code path for every architecture.

`paper` is the papers' 3D-DenseNet at (16, 128, 128) (about 0.73 M parameters, a GPU job);
`cpu-small` and `cpu-medium` keep the architecture and shrink the input and the widths so a
training sample costs a fraction of a second on one CPU core.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ucadi.model.errors import ModelError


@dataclass(frozen=True)
class ModelPreset:
    """Input size and width parameters shared by all architectures."""

    name: str
    slices: int
    height: int
    width: int
    # 3D-DenseNet widths (reference implementation: stem 32, growth 32, bottleneck 4x).
    stem_channels: int
    growth_rate: int
    bottleneck_factor: int
    # Baselines (3D-ResNet, 3D-Xception): channels of the first stage (64 in the originals).
    base_width: int
    # DropBlock before and after the dense blocks; block edge in voxels at that resolution.
    dropblock_prob: float
    dropblock_size: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(slices, height, width) of one preprocessed study."""
        return (self.slices, self.height, self.width)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly copy."""
        return asdict(self)


PRESETS: dict[str, ModelPreset] = {
    "paper": ModelPreset("paper", 16, 128, 128, stem_channels=32, growth_rate=32,
                         bottleneck_factor=4, base_width=64, dropblock_prob=0.1,
                         dropblock_size=5),
    "cpu-medium": ModelPreset("cpu-medium", 16, 48, 48, stem_channels=12, growth_rate=12,
                              bottleneck_factor=4, base_width=16, dropblock_prob=0.1,
                              dropblock_size=3),
    "cpu-small": ModelPreset("cpu-small", 16, 32, 32, stem_channels=8, growth_rate=8,
                             bottleneck_factor=4, base_width=8, dropblock_prob=0.1,
                             dropblock_size=3),
}


def get_preset(name: str) -> ModelPreset:
    """The preset called `name`, or a ModelError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown model preset {name!r}; choose one of: "
                         f"{', '.join(PRESETS)}") from None
