"""model_summary: leaf layers, parameters (shared once, frozen apart), FLOPs at 2 per multiply-add, anchors."""

from __future__ import annotations

import torch
from torch import nn

from cvkit.engine.summary import format_model_summary, model_summary


class Net(nn.Module):
    """conv 3->4 (3x3, padding 1) then a linear layer; outputs anchors like a detector."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 2)
        self.fc_again = self.fc  # shared: counted once
        self.body[0].bias.requires_grad_(False)

    def forward(self, images):
        assert images.dtype == torch.uint8
        x = self.body(images.float()).mean(dim=(2, 3))
        return {"logits": self.fc(x) + self.fc_again(x), "anchors": torch.zeros(7, 4)}


def test_counts_layers_parameters_flops_and_anchors():
    net = Net().train()
    summary = model_summary(net, (5, 6))
    assert summary["layers"] == 3 and summary["layer_types"] == {"Conv2d": 1, "ReLU": 1, "Linear": 1}
    assert summary["parameters"] == 3 * 4 * 9 + 4 + 4 * 2 + 2
    assert summary["trainable_parameters"] == summary["parameters"] - 4
    conv_macs = 5 * 6 * 4 * 3 * 9  # every output position: 3x3x3 multiply-adds per output channel
    linear_macs = 4 * 2 * 2  # the linear layer runs twice
    assert summary["flops"] == 2 * (conv_macs + linear_macs)
    assert summary["anchors"] == 7 and summary["input_size"] == [5, 6]
    assert net.training  # mode restored
    text = format_model_summary(summary)
    assert text.startswith("model Net: 3 layers") and "7 anchors per image" in text and "at 5x6" in text


def test_without_a_size_only_layers_and_parameters():
    summary = model_summary(nn.Linear(3, 2))
    assert summary["parameters"] == 8 and "flops" not in summary and "anchors" not in summary
