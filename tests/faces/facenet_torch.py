"""facenet-pytorch's InceptionResnetV1 in PyTorch, the reference of the converter's parity test (imported by that
test only: torch takes seconds to import)."""

import torch
from torch import nn as tnn
from torch.nn import functional as F


class _TorchConv(tnn.Module):
  """facenet-pytorch's BasicConv2d: conv without bias, BN (eps 1e-3), ReLU."""

  def __init__(self, cin, cout, kernel, stride=1, padding=0):
    super().__init__()
    self.conv = tnn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    self.bn = tnn.BatchNorm2d(cout, eps=1e-3)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _torch_branches(module, cin, branches):
  """Sets branch{i}: one conv directly, several in an nn.Sequential, as facenet-pytorch names them.

  branches: per branch, a list of (out channels, kernel, stride, padding).
  """
  for i, convs in enumerate(branches):
    layers, c = [], cin
    for cout, kernel, stride, padding in convs:
      layers.append(_TorchConv(c, cout, kernel, stride, padding))
      c = cout
    setattr(module, f'branch{i}', layers[0] if len(layers) == 1 else tnn.Sequential(*layers))
  module.num_branches = len(branches)


class _TorchResidual(tnn.Module):

  def __init__(self, channels, branches, scale, relu=True):
    super().__init__()
    _torch_branches(self, channels, branches)
    self.conv2d = tnn.Conv2d(sum(b[-1][0] for b in branches), channels, 1)
    self.scale, self.relu = scale, relu

  def forward(self, x):
    y = torch.cat([getattr(self, f'branch{i}')(x) for i in range(self.num_branches)], 1)
    y = self.conv2d(y) * self.scale + x
    return F.relu(y) if self.relu else y


class _TorchReduction(tnn.Module):

  def __init__(self, channels, branches):
    super().__init__()
    _torch_branches(self, channels, branches)

  def forward(self, x):
    ys = [getattr(self, f'branch{i}')(x) for i in range(self.num_branches)]
    return torch.cat(ys + [F.max_pool2d(x, 3, 2)], 1)


def _block35():
  return _TorchResidual(256, [[(32, 1, 1, 0)], [(32, 1, 1, 0),
                                                (32, 3, 1, 1)], [(32, 1, 1, 0), (32, 3, 1, 1), (32, 3, 1, 1)]], 0.17)


def _block17():
  return _TorchResidual(896, [[(128, 1, 1, 0)], [(128, 1, 1, 0), (128, (1, 7), 1, (0, 3)), (128, (7, 1), 1, (3, 0))]],
                        0.10)


def _block8(scale=0.20, relu=True):
  return _TorchResidual(1792, [[(192, 1, 1, 0)], [(192, 1, 1, 0), (192, (1, 3), 1, (0, 1)), (192, (3, 1), 1, (1, 0))]],
                        scale, relu)


class TorchInceptionResnetV1(tnn.Module):
  """facenet-pytorch's InceptionResnetV1 up to the normalised 512-d embedding, with its module names."""

  def __init__(self):
    super().__init__()
    self.conv2d_1a = _TorchConv(3, 32, 3, 2)
    self.conv2d_2a = _TorchConv(32, 32, 3)
    self.conv2d_2b = _TorchConv(32, 64, 3, 1, 1)
    self.conv2d_3b = _TorchConv(64, 80, 1)
    self.conv2d_4a = _TorchConv(80, 192, 3)
    self.conv2d_4b = _TorchConv(192, 256, 3, 2)
    self.repeat_1 = tnn.Sequential(*[_block35() for _ in range(5)])
    self.mixed_6a = _TorchReduction(256, [[(384, 3, 2, 0)], [(192, 1, 1, 0), (192, 3, 1, 1), (256, 3, 2, 0)]])
    self.repeat_2 = tnn.Sequential(*[_block17() for _ in range(10)])
    self.mixed_7a = _TorchReduction(896,
                                    [[(256, 1, 1, 0),
                                      (384, 3, 2, 0)], [(256, 1, 1, 0),
                                                        (256, 3, 2, 0)], [(256, 1, 1, 0), (256, 3, 1, 1),
                                                                          (256, 3, 2, 0)]])
    self.repeat_3 = tnn.Sequential(*[_block8() for _ in range(5)])
    self.block8 = _block8(1.0, relu=False)
    self.last_linear = tnn.Linear(1792, 512, bias=False)
    self.last_bn = tnn.BatchNorm1d(512, eps=1e-3)

  def forward(self, x):
    x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
    x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(F.max_pool2d(x, 3, 2))))
    x = self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x)))))
    x = self.block8(x).mean(dim=(2, 3))
    return F.normalize(self.last_bn(self.last_linear(x)), p=2, dim=1)
