"""Fine-tuning: a checkpoint trained on one task reaches a target accuracy on a related task in fewer steps
than training from scratch (built-in shapes: task A = circle/square/star with 1500 images, task B =
triangle/cross/circle with 150 images, where training from scratch overfits). One torch thread: the test
runs on loaded 2-core machines, where two threads are many times slower."""

import numpy as np
import torch

from cvkit.data.image_folder import ImageFolderDataset
from cvkit.data.synthetic import SyntheticConfig, generate_classification
from cvkit.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from cvkit.models.classification import ClassifierConfig, build_classifier
from cvkit.transforms.config import TransformsConfig
from cvkit.transforms.presets import cls_eval

MODEL = "resnet_mini"
WIDTH = 8  # widths 8/16/32/64: fast on a loaded 2-core CPU
SIZE = 32
BATCH = 32
EVAL_EVERY = 5
PRETRAIN_STEPS = 400
MAX_STEPS = 60
TARGET = 0.5  # 3 classes: chance is 1/3


def _tensors(root, split):
    dataset = ImageFolderDataset(root, split)
    transform = cls_eval(TransformsConfig(size=(SIZE, SIZE), cls_resize_ratio=1.0))
    images = torch.stack([transform(dataset[i])["image"] for i in range(len(dataset))])  # uint8: the model normalizes
    return images, torch.tensor(dataset.targets)


def _task(tmp_path, classes, seed, num_train):
    cfg = SyntheticConfig(seed=seed, num_train=num_train, num_val=150, classes=classes, cls_image_size=SIZE)
    root = generate_classification(cfg, tmp_path, progress=False)
    return _tensors(root, "train"), _tensors(root, "val")


def _accuracy(model, images, labels):
    model.eval()
    with torch.no_grad():
        acc = (model(images).argmax(1) == labels).float().mean().item()
    model.train()
    return acc


def _train(model, train, val, max_steps, target=None, seed=0):
    """Adam steps on shuffled batches; returns the first step count (a multiple of EVAL_EVERY) at which the val
    accuracy reaches ``target`` (None: never within ``max_steps``)."""
    images, labels = train
    generator = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    order = np.array([], dtype=np.int64)
    for step in range(1, max_steps + 1):
        if len(order) < BATCH:
            order = np.concatenate([order, generator.permutation(len(labels))])
        index, order = torch.from_numpy(order[:BATCH]), order[BATCH:]
        loss = torch.nn.functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if target is not None and step % EVAL_EVERY == 0:
            accuracy = _accuracy(model, *val)
            print(f"step {step}: val accuracy {accuracy:.3f}")
            if accuracy >= target:
                return step
    return None



def test_finetuning_reaches_the_target_in_fewer_steps_than_scratch(tmp_path, one_thread):
    task_a = _task(tmp_path, ("circle", "square", "star"), seed=1, num_train=1500)
    task_b = _task(tmp_path, ("triangle", "cross", "circle"), seed=2, num_train=150)
    torch.manual_seed(0)

    source = build_classifier(ClassifierConfig(name=MODEL, hidden_dim=WIDTH), 3, (SIZE, SIZE))
    _train(source, *task_a, max_steps=PRETRAIN_STEPS)
    checkpoint = save_checkpoint(tmp_path / "task_a.pt",
                                 {"format": CHECKPOINT_FORMAT, "model": source.state_dict(), "ema": None})

    torch.manual_seed(1)
    finetuned = build_classifier(ClassifierConfig(name=MODEL, hidden_dim=WIDTH, pretrained=str(checkpoint)), 3,
                                 (SIZE, SIZE))
    torch.manual_seed(1)
    scratch = build_classifier(ClassifierConfig(name=MODEL, hidden_dim=WIDTH), 3, (SIZE, SIZE))
    assert not torch.equal(finetuned.stages[1].conv1.weight, scratch.stages[1].conv1.weight)
    steps_finetuned = _train(finetuned, *task_b, max_steps=MAX_STEPS, target=TARGET)
    steps_scratch = _train(scratch, *task_b, max_steps=MAX_STEPS, target=TARGET)
    print(f"steps to {TARGET:.0%} on task B: fine-tuned {steps_finetuned}, scratch {steps_scratch}")
    assert steps_finetuned is not None
    assert steps_scratch is None or steps_finetuned < steps_scratch
