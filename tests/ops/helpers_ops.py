"""Small random inputs for the deformable-op tests."""

from __future__ import annotations

import pytest
import torch

# gradcheck in fast mode (random projections of the Jacobian, seconds) by default, in full (every input
# element, tens of seconds on two cores) with -m slow. Both compare against finite differences in float64.
GRADCHECK_MODES = [pytest.param(True, id="fast"), pytest.param(False, id="full", marks=pytest.mark.slow)]


def level_layout(
    shapes: list[tuple[int, int]], device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """spatial_shapes [L, 2], level_start_index [L], S."""
    ss = torch.tensor(shapes, dtype=torch.long, device=device)
    sizes = ss.prod(1)
    start = torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))
    return ss, start, int(sizes.sum())


def random_locations(*shape: int, dtype=torch.float64, generator=None, device="cpu") -> torch.Tensor:
    """Locations in [-0.3, 1.3]: many taps fall outside the map, some samples entirely outside."""
    return torch.rand(*shape, dtype=dtype, generator=generator, device=device) * 1.6 - 0.3
