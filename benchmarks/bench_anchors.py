"""Anchor generation on CPU: cvkit's ``AnchorGenerator`` / ``multibox_prior`` vs torchvision's generators and
the d2l book's ``multibox_prior``.

Target (issue 3): at least as fast as torchvision's generators on SSD300 and a 640x640 five-level setup,
and free after the first call (cache). Each setup runs twice: ``cached`` (the normal call: the generator
returns its cached tensor) and ``first call`` (the cache is cleared before every call, so the anchors are
built from scratch). torchvision's generators rebuild on every forward; they are called with a batch of
one image (their cheapest case). Outputs are checked equal.
Run: .venv/bin/python benchmarks/bench_anchors.py [--quick] [--threads 1 2]
"""

from __future__ import annotations

import torch
from _harness import Bench, parse_args
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from cvkit import ops
from cvkit.ops.anchors import _PRIOR_CACHE, SSD300_SETTINGS


def _tv_call(generator, feature_sizes, image_size):
    images = ImageList(torch.zeros(1, 3, *image_size), [tuple(image_size)])
    feats = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    return lambda: generator(images, feats)[0]


def book_multibox_prior(data, sizes, ratios):
    """The d2l book's multibox_prior, ported line for line (the baseline)."""
    in_height, in_width = data.shape[-2:]
    device, num_sizes, num_ratios = data.device, len(sizes), len(ratios)
    boxes_per_pixel = num_sizes + num_ratios - 1
    size_tensor = torch.tensor(sizes, device=device)
    ratio_tensor = torch.tensor(ratios, device=device)
    steps_h, steps_w = 1.0 / in_height, 1.0 / in_width
    center_h = (torch.arange(in_height, device=device) + 0.5) * steps_h
    center_w = (torch.arange(in_width, device=device) + 0.5) * steps_w
    shift_y, shift_x = torch.meshgrid(center_h, center_w, indexing="ij")
    shift_y, shift_x = shift_y.reshape(-1), shift_x.reshape(-1)
    w = (
        torch.cat((size_tensor * torch.sqrt(ratio_tensor[0]), sizes[0] * torch.sqrt(ratio_tensor[1:])))
        * in_height
        / in_width
    )
    h = torch.cat((size_tensor / torch.sqrt(ratio_tensor[0]), sizes[0] / torch.sqrt(ratio_tensor[1:])))
    manipulations = torch.stack((-w, -h, w, h)).T.repeat(in_height * in_width, 1) / 2
    grid = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=1).repeat_interleave(boxes_per_pixel, dim=0)
    return (grid + manipulations).unsqueeze(0)


def _equal(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


def _pair(bench, case, generator_call, clear, baseline, target=1.0, baseline_name="torchvision"):
    bench.compare(
        case={**case, "mode": "cached"},
        candidate=generator_call,
        baseline=baseline,
        check=_equal,
        target=target,
        baseline_name=baseline_name,
    )

    def fresh():
        clear()
        return generator_call()

    bench.compare(
        case={**case, "mode": "first call"},
        candidate=fresh,
        baseline=baseline,
        check=_equal,
        target=target,
        baseline_name=baseline_name,
    )


def main() -> None:
    args = parse_args("anchors")
    bench = Bench("anchors", args)

    ssd300_features = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    ssd300 = ops.AnchorGenerator.ssd300()
    tv_ssd300 = DefaultBoxGenerator(
        [list(r) for r in SSD300_SETTINGS["aspect_ratios"]],
        scales=list(SSD300_SETTINGS["scales"]),
        steps=list(SSD300_SETTINGS["steps"]),
    )

    features640 = [(80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    ratios640 = [[2], [2, 3], [2, 3], [2], [2]]
    steps640 = [8, 16, 32, 64, 128]
    ssd640 = ops.AnchorGenerator.ssd(ratios640, min_ratio=0.1, max_ratio=0.9, steps=steps640)
    tv_ssd640 = DefaultBoxGenerator(ratios640, min_ratio=0.1, max_ratio=0.9, steps=steps640)

    # RetinaNet-style explicit sizes: torchvision's ratio is height / width, cvkit's width / height
    sizes640 = tuple((s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)) for s in (32, 64, 128, 256, 512))
    tv_ratios = ((0.5, 1.0, 2.0),) * 5
    retina640 = ops.AnchorGenerator(
        sizes640, [[1 / r for r in lv] for lv in tv_ratios], strides=steps640, offset=0.0, round_cells=True
    )
    tv_retina640 = TVAnchorGenerator(sizes640, tv_ratios)

    tiny_levels = [(32, [0.2, 0.272]), (16, [0.37, 0.447]), (8, [0.54, 0.619]), (4, [0.71, 0.79]), (1, [0.88, 0.961])]
    ratios = [1, 2, 0.5]

    for _ in bench.thread_settings():
        _pair(
            bench,
            {"op": "AnchorGenerator.ssd300", "anchors": 8732},
            lambda: ssd300(ssd300_features, (300, 300)),
            ssd300.clear_cache,
            _tv_call(tv_ssd300, ssd300_features, (300, 300)),
        )
        _pair(
            bench,
            {"op": "AnchorGenerator.ssd 640x640 5 levels", "anchors": ssd640.num_anchors_per_level(features640)},
            lambda: ssd640(features640, (640, 640)),
            ssd640.clear_cache,
            _tv_call(tv_ssd640, features640, (640, 640)),
        )
        _pair(
            bench,
            {
                "op": "AnchorGenerator sizes 640x640 5 levels",
                "anchors": sum(retina640.num_anchors_per_level(features640)),
            },
            lambda: retina640(features640, (640, 640)),
            retina640.clear_cache,
            _tv_call(tv_retina640, features640, (640, 640)),
        )
        for name, shape, levels in (
            ("TinySSD 256x256 (5 levels)", None, tiny_levels),
            ("book 561x728", (561, 728), None),
        ):
            if levels is not None:
                datas = [(torch.zeros(1, 3, s, s), sz) for s, sz in levels]
            else:
                datas = [(torch.zeros(1, 3, *shape), [0.75, 0.5, 0.25])]

            def ours(datas=datas):
                return [ops.multibox_prior(d, sz, ratios) for d, sz in datas]

            def book(datas=datas):
                return [book_multibox_prior(d, sz, ratios) for d, sz in datas]

            _pair(bench, {"op": "multibox_prior", "case": name}, ours, _PRIOR_CACHE.clear, book, baseline_name="d2l")
    bench.finish()


if __name__ == "__main__":
    main()
