"""SSD extra layers: after the backbone's last tap, each extra layer halves (or trims) the map down to 1x1.

Extra layer ``i``: 1x1 conv to ``mid_channels[i]``, ReLU, 3x3 conv to ``out_channels[i]``, ReLU (with
BatchNorm after each conv when ``batch_norm``). The 3x3 conv has stride 2 and padding 1
(``H -> ceil(H / 2)``), except the last ``num_valid`` layers: stride 1, no padding (``H -> H - 2``), as in
SSD300 where the maps go 10 -> 5 -> 3 -> 1 (ResNet/DenseNet taps end at 10x10) or 19 -> 10 -> 5 -> 3 -> 1
(VGG ends at 19x19).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["SSDExtras"]


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=not batch_norm)
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return [conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]


class SSDExtras(nn.Module):
    """The extra feature levels after the backbone: ``forward(x) -> list`` of ``len(out_channels)`` maps.

    Args:
        in_channels: channels of the backbone's last tap.
        mid_channels, out_channels: per extra layer, the 1x1 bottleneck and output channels.
        num_valid: the last ``num_valid`` layers use an unpadded stride-1 3x3 conv (``H -> H - 2``).
        batch_norm: BatchNorm after each conv (no conv bias then).
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: Sequence[int],
        out_channels: Sequence[int],
        num_valid: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(mid_channels) != len(out_channels):
            raise ValueError(
                f"mid_channels ({len(mid_channels)}) and out_channels ({len(out_channels)}) need one entry per layer"
            )
        num = len(out_channels)
        layers = []
        for i, (mid, out) in enumerate(zip(mid_channels, out_channels)):
            valid = i >= num - num_valid
            stride, padding = (1, 0) if valid else (2, 1)
            layers.append(
                nn.Sequential(
                    *_conv(in_channels, mid, 1, 1, 0, batch_norm), *_conv(mid, out, 3, stride, padding, batch_norm)
                )
            )
            in_channels = out
        self.layers = nn.ModuleList(layers)
        self.out_channels = [int(c) for c in out_channels]

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C_in, H, W) -> one (B, out_channels[i], H_i, W_i) map per extra layer."""
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features
