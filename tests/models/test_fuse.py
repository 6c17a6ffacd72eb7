"""fold_batchnorm: an inference copy with Conv2d -> BatchNorm2d pairs folded gives the same outputs."""

import pytest
import torch

from cvkit.models import build_ssd, fold_batchnorm
from tests.models._small import SMALL, SMALL_ANCHORS, one_thread, small_model_cfg

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


@pytest.mark.parametrize("name, folded", [("resnet18", 26), ("vgg16_bn", 21), ("densenet121", 7)])
def test_folded_copy_matches_the_eval_model(name, folded):
    model = build_ssd(small_model_cfg(name), SMALL_ANCHORS, 3).train()
    with torch.no_grad():
        for _ in range(2):  # move the running statistics away from (0, 1)
            model(torch.randn(2, 3, SMALL, SMALL) * 2 + 0.5)
    model.eval()
    fused = fold_batchnorm(model)
    assert fused.num_folded_batchnorms == folded
    remaining = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert remaining == (120 if name == "densenet121" else 0)  # DenseNet's norms precede their convs
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > remaining  # original untouched
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        ours, ref = fused(x), model(x)
    torch.testing.assert_close(ours["cls_logits"], ref["cls_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours["bbox_deltas"], ref["bbox_deltas"], atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="inference only"):
        fused.train()
