"""Before/after figure of a translation: slices, their difference, and HU histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Slices shown side by side.
FIGURE_SLICES = 4
HISTOGRAM_BINS = 90


def before_after_figure(path: Path, before: np.ndarray, after: np.ndarray,
                        window_hu: tuple[float, float], title: str,
                        reference: np.ndarray | None = None) -> Path:
    """PNG of up to 4 slices (contrast input, translation, difference) and the HU histograms
    of all given slices; `reference`: real non-contrast slices, drawn as a third histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = np.round(np.linspace(0, len(before) - 1, min(FIGURE_SLICES, len(before))))
    chosen = chosen.astype(int)
    columns = len(chosen)
    figure = plt.figure(figsize=(2.4 * columns + 0.5, 10.5))
    grid = figure.add_gridspec(4, columns, height_ratios=[1, 1, 1, 1.2])
    low, high = window_hu
    rows = (("contrast (input)", before, "gray", (low, high)),
            ("translated", after, "gray", (low, high)),
            ("translated - input (HU)", after - before, "coolwarm", (-300, 300)))
    for row, (name, images, cmap, limits) in enumerate(rows):
        for column, index in enumerate(chosen):
            axis = figure.add_subplot(grid[row, column])
            shown = axis.imshow(images[index], cmap=cmap, vmin=limits[0], vmax=limits[1])
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(name)
        figure.colorbar(shown, ax=axis, fraction=0.046)
    histogram = figure.add_subplot(grid[3, :])
    bins = np.linspace(low, high, HISTOGRAM_BINS + 1)
    series = [("contrast input", before), ("translated", after)]
    if reference is not None and len(reference):
        series.append(("real non-contrast", reference))
    for name, values in series:
        histogram.hist(values.ravel(), bins=bins, histtype="step", density=True, label=name,
                       linewidth=1.5)
    histogram.set_yscale("log")
    histogram.set_xlabel("HU (lung window)")
    histogram.set_ylabel("density")
    histogram.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def hu_summary(before: np.ndarray, after: np.ndarray,
               reference: np.ndarray | None = None) -> dict[str, float]:
    """Mean HU of the soft-tissue/vessel range (-100..600) before and after, and of the real
    non-contrast slices: what contrast raises and the translation should lower."""
    def soft(values: np.ndarray) -> float:
        picked = values[(values > -100) & (values <= 600)]
        return float(picked.mean()) if picked.size else float("nan")

    summary = {"soft_tissue_mean_hu_before": soft(before),
               "soft_tissue_mean_hu_after": soft(after),
               "min_hu_after": float(after.min()), "max_hu_after": float(after.max()),
               "mean_abs_change_hu": float(np.abs(after - before).mean())}
    if reference is not None and len(reference):
        summary["soft_tissue_mean_hu_noncontrast"] = soft(reference)
    return summary
