"""The peer of the synthesiser benchmark: the project's synthesiser in PyTorch, in DDSP's reference formulation.

The same controls (`synthesis.controls`: exp_sigmoid amplitudes and distribution with the fundamental floor, noise
bands bounded relative to the harmonics, the attack-decay envelope) and the same note, but the harmonic bank as
magenta/ddsp's `core.harmonic_synthesis` computes it: every control upsampled to audio rate ([B, length, K]
amplitudes, linear between frames as the JAX bank does; DDSP's default is overlapping Hann windows), the phases a
cumulative sum of the angular frequencies, a sine per sample and harmonic, summed. The filtered noise is the project's overlap-add of frames of a fixed white spectrum (DDSP's
`frequency_filter` does the same filtering by FFT convolution). `python -m benchmarks.run` times its forward +
backward against the JAX synthesiser's on the same raw controls and reports how far apart their notes are.

Needs torch (`bash scripts/install.sh test` installs it); imported only by that section of the benchmark.
"""

import math

import numpy as np
import torch

from face2music_jax.audio.synthesis import ATTACK_S
from face2music_jax.audio.synthesis import DECAY_S


def exp_sigmoid(x: torch.Tensor, max_value: float = 2.0, exponent: float = 10.0) -> torch.Tensor:
  return max_value * torch.sigmoid(x)**math.log(exponent) + 1e-7


def upsample_linear(frames: torch.Tensor, length: int) -> torch.Tensor:
  """[B, F, C] frame controls -> [B, length, C]: frame f at sample f hop, linear between frames, the last held."""
  batch, num_frames, channels = frames.shape
  hop = length // num_frames
  following = torch.cat([frames[:, 1:], frames[:, -1:]], dim=1)
  ramp = (torch.arange(hop, dtype=frames.dtype) / hop)[None, None, :, None]
  return (frames[:, :, None] * (1 - ramp) + following[:, :, None] * ramp).reshape(batch, length, channels)


def harmonic_synthesis(f0_hz: torch.Tensor, amplitude: torch.Tensor, distribution: torch.Tensor, length: int,
                       sample_rate: int) -> torch.Tensor:
  """DDSP's oscillator bank: audio-rate amplitudes and frequencies, phases by cumsum, a sine per partial."""
  num_harmonics = distribution.shape[-1]
  k = torch.arange(1, num_harmonics + 1, dtype=torch.float32)
  frequencies = f0_hz[:, None] * k  # [B, K], constant over the note.
  distribution = distribution * (frequencies < sample_rate / 2).float()[:, None, :]
  distribution = distribution / distribution.sum(-1, keepdim=True).clamp_min(1e-7)
  amplitudes = upsample_linear(amplitude * distribution, length)  # [B, length, K]
  omegas = (2 * math.pi / sample_rate) * frequencies[:, None, :].expand(-1, length, -1)
  phases = torch.cumsum(omegas, dim=1) - omegas[:, :1]  # The first sample at phase 0, as the JAX bank.
  return torch.sum(amplitudes * torch.sin(phases), dim=-1)


def filtered_noise(magnitudes: torch.Tensor, white: torch.Tensor, length: int, hop: int) -> torch.Tensor:
  """synthesis.filtered_noise: frames of the fixed white spectrum times each frame's response, overlap-added."""
  batch, frames, bands = magnitudes.shape
  response = torch.nn.functional.interpolate(magnitudes.reshape(batch * frames, 1, bands), size=hop + 1, mode='linear',
                                             align_corners=False).reshape(batch, frames, hop + 1)
  frame_audio = torch.fft.irfft(response * white, n=2 * hop, dim=-1)
  frame_audio = frame_audio * torch.from_numpy(np.hanning(2 * hop + 1)[:-1].astype(np.float32))
  return (frame_audio[:, :-1, hop:] + frame_audio[:, 1:, :hop]).reshape(batch, length)


def synthesize(raw: dict[str,
                         torch.Tensor], f0_hz: torch.Tensor, white: torch.Tensor, release: torch.Tensor, *, length: int,
               sample_rate: int, noise_max: float, relative_noise: bool, fundamental_floor: float) -> torch.Tensor:
  """synthesis.synthesize(synthesis.controls(raw, ...), f0_hz, ...) in PyTorch; `white` [F + 1, hop + 1] complex."""
  amplitude = exp_sigmoid(raw['amplitude'])  # [B, F, 1]
  distribution = exp_sigmoid(raw['harmonics'])
  if fundamental_floor > 0:
    distribution = distribution / distribution.sum(-1, keepdim=True).clamp_min(1e-7)
    fundamental = torch.nn.functional.one_hot(torch.tensor(0), distribution.shape[-1]).float()
    distribution = (1 - fundamental_floor) * distribution + fundamental_floor * fundamental
  noise = exp_sigmoid(raw['noise'], max_value=noise_max)
  if relative_noise:
    noise = noise * amplitude
  batch, frames, bands = noise.shape
  noise = torch.nn.functional.interpolate(noise.transpose(1, 2), size=frames + 1, mode='linear',
                                          align_corners=False).transpose(1, 2)
  attack, decay, sustain = torch.split(torch.sigmoid(raw['envelope']), 1, dim=-1)
  t = torch.arange(length, dtype=torch.float32)[None, :] / sample_rate
  attack_s, decay_s = ATTACK_S[0] * ATTACK_S[1]**attack, DECAY_S[0] * DECAY_S[1]**decay
  envelope = (1 - torch.exp(-t / attack_s)) * (sustain + (1 - sustain) * torch.exp(-t / decay_s))
  harmonic = harmonic_synthesis(f0_hz, amplitude, distribution, length, sample_rate)
  return envelope * release * (harmonic + filtered_noise(noise, white, length, length // frames))
