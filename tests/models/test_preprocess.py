"""The models' first module (cvkit.models.preprocess): uint8 images in, float32 ``(x - pixel_mean) / pixel_std``
out, from buffers in the state_dict; floats pass through; every detector arch and classifier normalizes."""

import pytest
import torch

from cvkit.checkpoint import PIXEL_STAT_KEYS
from cvkit.models import build_detector
from cvkit.models.classification import ClassifierConfig, build_classifier
from cvkit.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageNormalizer, channel_stats
from cvkit.transforms import TransformsConfig
from tests.models._small import SMALL, SMALL_ANCHORS, LossConfig, PostprocessConfig, one_thread, small_model_cfg

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

# not ImageNet's statistics: the values a model uses must be its own buffers, not a default
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


def old_normalized(images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """What the data pipeline fed the models before (``Normalize``): float32 ``(x / 255 - mean) / std``,
    computed here in float64."""
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((images.double() / 255.0 - m) / s).float()


def uint8_images(batch: int, size: int, seed: int = 0, channel_last: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if channel_last:  # a collated batch: a (B, 3, H, W) view of a (B, H, W, 3) buffer
        return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)


# --- the module ----------------------------------------------------------------------------------------------


def test_buffers_are_255_times_the_config_values_and_the_whole_state():
    normalizer = ImageNormalizer(MEAN, STD)
    state = normalizer.state_dict()
    assert list(state) == ["pixel_mean", "pixel_std"]
    for key, values in (("pixel_mean", MEAN), ("pixel_std", STD)):
        assert state[key].dtype == torch.float32 and state[key].shape == (3, 1, 1)
        assert torch.equal(state[key], (255.0 * torch.tensor(values, dtype=torch.float64)).float().view(3, 1, 1))
    assert normalizer.num_channels == 3
    assert "pixel_mean=[127.5, 102.0, 76.5]" in repr(normalizer)


def test_uint8_is_normalized_as_the_old_pipeline_did():
    normalizer = ImageNormalizer(MEAN, STD)
    images = uint8_images(2, 9)
    images[0, :, 0, 0] = 0
    images[0, :, 0, 1] = 255
    out = normalizer(images)
    assert out.dtype == torch.float32 and out.shape == images.shape and out.is_contiguous()
    assert torch.allclose(out, old_normalized(images), rtol=0, atol=2e-6)
    lowest = torch.tensor([-m / s for m, s in zip(MEAN, STD)])
    highest = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)])
    assert torch.allclose(out[0, :, 0, 0], lowest, atol=2e-6) and torch.allclose(out[0, :, 0, 1], highest, atol=2e-6)
    assert images.dtype == torch.uint8  # the input is not touched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_float_input_is_taken_as_already_normalized_and_passes_through(dtype):
    normalizer = ImageNormalizer(MEAN, STD)
    images = torch.randn(2, 3, 5, 5).to(dtype)
    assert normalizer(images) is images  # the same tensor: not rescaled, not copied


def test_other_dtypes_and_shapes_are_refused():
    normalizer = ImageNormalizer(MEAN, STD)
    with pytest.raises(TypeError, match="uint8"):
        normalizer(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        normalizer(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        normalizer(torch.zeros(1, 4, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="positive"):
        ImageNormalizer(MEAN, (0.2, 0.0, 0.3))
    with pytest.raises(ValueError, match="one value per channel"):
        ImageNormalizer(MEAN, (0.2, 0.3))


def test_channel_last_cpu_path_equals_the_torch_path_bit_for_bit():
    normalizer = ImageNormalizer(IMAGENET_MEAN, IMAGENET_STD)
    channel_last = uint8_images(3, 11, seed=1, channel_last=True)
    assert channel_last.permute(0, 2, 3, 1).is_contiguous()  # takes the cv2 + numpy path
    fast = normalizer(channel_last)
    reference = normalizer(channel_last.contiguous())  # the torch path
    assert torch.equal(fast, reference) and fast.is_contiguous()
    greyscale = ImageNormalizer((0.5,), (0.25,))
    pixels = torch.randint(0, 256, (2, 6, 7, 1), dtype=torch.uint8).permute(0, 3, 1, 2)
    assert torch.equal(greyscale(pixels), greyscale(pixels.contiguous()))


def test_a_traced_normalizer_computes_in_the_graph_not_a_frozen_constant():
    # tracing takes the torch path even for a channel-last CPU batch: numpy would be frozen in as a constant
    normalizer = ImageNormalizer(MEAN, STD)
    traced = torch.jit.trace(normalizer, uint8_images(2, 8, seed=2, channel_last=True))
    other = uint8_images(2, 8, seed=3, channel_last=True)
    assert torch.equal(traced(other), normalizer(other))


def test_channel_stats_average_the_rgb_values_for_other_channel_counts():
    assert channel_stats(MEAN, 3) == MEAN
    assert channel_stats(MEAN, 1) == pytest.approx((0.4,))
    assert channel_stats((0.2,), 1) == (0.2,)


def test_imagenet_defaults_are_the_transforms_defaults():
    assert IMAGENET_MEAN == TransformsConfig().mean and IMAGENET_STD == TransformsConfig().std


@pytest.mark.cuda
def test_normalizer_on_cuda_equals_the_cpu_values():
    normalizer = ImageNormalizer(IMAGENET_MEAN, IMAGENET_STD)
    pixels = torch.randint(0, 256, (2, 37, 53, 3), dtype=torch.uint8)
    batch = pixels.permute(0, 3, 1, 2)
    cpu = normalizer(batch)  # the cv2 + numpy path for channel-last views
    cuda = normalizer.cuda()(batch.cuda())  # torch on the device
    assert cuda.device.type == "cuda" and cuda.is_contiguous()
    assert torch.equal(cuda.cpu(), cpu)  # the same float32 operations: bit-identical


# --- every model ------------------------------------------------------------------------------------------


def _detector(arch: str) -> torch.nn.Module:
    cfg = small_model_cfg(arch=arch, channels_last=False) if arch == "ssd" else small_model_cfg(
        arch="dense", neck_channels=16, channels_last=False)
    anchors = SMALL_ANCHORS
    if arch == "dense":
        from cvkit.ops import AnchorConfig

        anchors = AnchorConfig(style="sizes", image_size=(SMALL, SMALL), sizes=((16,), (32,), (64,)),
                               aspect_ratios=((1.0,),), steps=(8, 16, 32))
    loss = LossConfig() if arch == "ssd" else LossConfig(cls_loss="qfl", box_loss="giou", assigner="atss")
    model, _, _ = build_detector(cfg, loss, PostprocessConfig(), anchors, 3, mean=MEAN, std=STD)
    return model


def _classifier(name: str) -> torch.nn.Module:
    return build_classifier(ClassifierConfig(name=name, hidden_dim=16), 3, image_size=(SMALL, SMALL), mean=MEAN,
                            std=STD)


MODELS = {"ssd": lambda: _detector("ssd"), "dense": lambda: _detector("dense"),
          "resnet_mini": lambda: _classifier("resnet_mini"), "lenet_bn": lambda: _classifier("lenet_bn")}


def _outputs(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(images)
    if isinstance(out, dict):
        return [out["cls_logits"], out["bbox_deltas"]]
    return [out]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_uint8_input_gives_the_outputs_of_the_old_normalized_float_input(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    assert isinstance(model.normalizer, ImageNormalizer)
    for channel_last in (False, True):
        images = uint8_images(2, SMALL, channel_last=channel_last)
        new = _outputs(model, images)  # the model normalizes
        old = _outputs(model, old_normalized(images))  # normalized floats: passed through, the old input
        for a, b in zip(new, old):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), float((a - b).abs().max())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_normalization_is_part_of_the_state_dict(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    state = model.state_dict()
    assert list(state)[:2] == list(PIXEL_STAT_KEYS)  # the first module
    assert torch.equal(state["normalizer.pixel_mean"], ImageNormalizer(MEAN, STD).pixel_mean)
    assert torch.equal(state["normalizer.pixel_std"], ImageNormalizer(MEAN, STD).pixel_std)
    torch.manual_seed(1)
    other = MODELS[name]()
    other.normalizer = ImageNormalizer()  # another model, ImageNet's statistics
    other.load_state_dict(state)  # takes on the saved mean/std with the weights
    other.eval()
    assert torch.equal(other.normalizer.pixel_mean, state["normalizer.pixel_mean"])
    images = uint8_images(1, SMALL)
    for a, b in zip(_outputs(model, images), _outputs(other, images)):
        assert torch.equal(a, b)
