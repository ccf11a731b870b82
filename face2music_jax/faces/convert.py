"""Converts facenet-pytorch's `InceptionResnetV1` state dict (e.g. its VGGFace2 weights) to a Flax weights file.

facenet-pytorch (timesler/facenet-pytorch) ships the VGGFace2-trained FaceNet as a PyTorch state dict,
`20180402-114759-vggface2.pt`. Its keys name modules as `faces/network.py` does, with torch's `nn.Sequential`
indices written `_i` in Flax:

  torch                                       Flax
  repeat_1.0.branch1.1.conv.weight [O,I,h,w]  params/repeat_1_0/branch1_1/conv/kernel [h,w,I,O]
  repeat_1.0.conv2d.bias                      params/repeat_1_0/conv2d/bias
  conv2d_1a.bn.weight / .bias                 params/conv2d_1a/bn/scale / bias
  conv2d_1a.bn.running_mean / running_var     batch_stats/conv2d_1a/bn/mean / var
  last_linear.weight [512, 1792]              params/last_linear/kernel [1792, 512]

`logits.*` (the VGGFace2 identity classifier) and `*.num_batches_tracked` are not needed and are ignored.

Usage (PyTorch needed only here; it is not a dependency of the rest of the project):
  python -m face2music_jax.faces.convert convert --torch_state_dict=20180402-114759-vggface2.pt --output=vggface2.npz

The same command refines a weights file on face TFRecords (`python -m face2music_jax.faces.convert refine ...`,
faces/refine.py).
"""

import argparse
from collections.abc import Mapping, Sequence
import os
import re
import sys
from typing import Any

from flax import traverse_util
import numpy as np

from face2music_jax.faces import network

# (Flax collection, Flax leaf name) -> torch parameter or buffer name.
_TORCH_LEAF = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


def torch_key(flax_key: str) -> str:
  """'params/repeat_1_0/branch1_1/conv/kernel' -> 'repeat_1.0.branch1.1.conv.weight'."""
  collection, *modules, leaf = flax_key.split('/')
  modules = [re.sub(r'_(\d+)$', r'.\1', m) for m in modules]
  return '.'.join(modules + [_TORCH_LEAF[collection, leaf]])


def _is_ignored(key: str) -> bool:
  return key.startswith('logits.') or key.endswith('.num_batches_tracked')


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
  """Torch conv [O, I, h, w] -> [h, w, I, O] and linear [O, I] -> [I, O]; vectors unchanged."""
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return array.T
  return array


def convert_state_dict(state_dict: Mapping[str, Any], model: network.InceptionResnetV1 | None = None) -> dict[str, Any]:
  """Maps an `InceptionResnetV1` state dict to the variables of `models.network.InceptionResnetV1`.

  Args:
    state_dict: torch key -> array (numpy, or anything `np.asarray` takes, e.g. a CPU torch tensor).
    model: the Flax network to fill; default facenet-pytorch's (repeats (5, 10, 5), width 1, 512-d).
  Returns:
    {'params': ..., 'batch_stats': ...} nested dicts of float32 numpy arrays.
  Raises:
    ValueError: naming missing keys, unexpected keys and keys of a wrong shape.
  """
  model = model or network.InceptionResnetV1()
  flat, problems, used = {}, [], set()
  for flax_key, shape in network.variable_shapes(model).items():
    key = torch_key(flax_key)
    if key not in state_dict:
      problems.append(f'missing {key}')
      continue
    used.add(key)
    value = _to_flax_layout(np.asarray(state_dict[key], np.float32))
    if value.shape != shape:
      problems.append(f'{key} has shape {np.shape(state_dict[key])}, which does not give {flax_key} {shape}')
    flat[flax_key] = value
  problems += [f'unexpected {k}' for k in state_dict if k not in used and not _is_ignored(k)]
  if problems:
    more = f'; and {len(problems) - 20} more' if len(problems) > 20 else ''
    raise ValueError('The state dict does not fit facenet-pytorch\'s InceptionResnetV1: ' + '; '.join(problems[:20]) +
                     more)
  return traverse_util.unflatten_dict(flat, sep='/')


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict file (tensors only, `weights_only=True`) into numpy arrays."""
  try:
    import torch  # Here: PyTorch is optional, only conversion needs it.
  except ImportError as e:
    raise ImportError('Converting a PyTorch state dict needs PyTorch: pip install torch') from e
  if not os.path.isfile(path):
    raise FileNotFoundError(f'PyTorch state dict not found: {path}')
  state_dict = torch.load(path, map_location='cpu', weights_only=True)
  if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
    raise ValueError(f'{path} does not hold a state dict (a mapping of names to tensors).')
  return {k: v.detach().float().numpy() for k, v in state_dict.items()}


def convert_file(torch_state_dict: str | os.PathLike, output: str | os.PathLike) -> None:
  """Converts facenet-pytorch's state dict file to a Flax weights file (.npz, see `faces/network.py`)."""
  network.save_face_weights(output, convert_state_dict(load_torch_state_dict(torch_state_dict)))


def main(argv: Sequence[str]) -> int:
  """Command line: `convert --torch_state_dict=in.pt --output=out.npz`, or `refine --weights=in.npz
  --records='DIR/train-*.tfrecord' --output=out.npz --steps=N` (faces/refine.py)."""
  # Here, not at the top: refinement reads face TFRecords (TensorFlow, dlib), which conversion does not need.
  from face2music_jax.faces import refine as face_refine  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog='python -m face2music_jax.faces.convert',
                                   description='Face embedding network tools.')
  commands = parser.add_subparsers(dest='command', required=True)
  convert = commands.add_parser('convert', help='facenet-pytorch InceptionResnetV1 state dict -> Flax .npz')
  convert.add_argument('--torch_state_dict', required=True, help='e.g. 20180402-114759-vggface2.pt')
  convert.add_argument('--output', required=True, help='Flax weights file to write (.npz).')
  face_refine.add_parser(commands)
  args = parser.parse_args(argv)
  if args.command == 'refine':
    if args.steps < 1:
      parser.error(f'--steps={args.steps}: expected at least 1.')
    face_refine.run(args)
  else:
    convert_file(args.torch_state_dict, args.output)
  print(f'Wrote {args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
