"""The complete config of a run: one frozen dataclass with every section, read from one YAML file.

    cfg = load_run_config("configs/default.yaml", overrides=["train.epochs=5", "data.batch_size=16"])

Sections and their owners: ``data`` (:class:`cvkit.data.config.DataConfig`), ``transforms``
(:class:`cvkit.transforms.config.TransformsConfig`), ``anchors`` (:class:`cvkit.ops.AnchorConfig`),
``model`` / ``loss`` / ``postprocess`` (:mod:`cvkit.models.config`), ``train``
(:class:`cvkit.engine.config.TrainConfig`), ``classifier`` (task ``classify``:
:class:`cvkit.models.classification.config.ClassifierConfig`). Top-level keys: ``task`` and ``name``.
Every key is optional; unknown keys anywhere are rejected with a "did you mean" suggestion.
Files are complete: no inheritance.
The resolved config (``to_dict``) is saved in the run folder and in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cvkit.config import ConfigError, apply_overrides, check_choice, from_dict, load_yaml, located, to_dict
from cvkit.data.config import DataConfig
from cvkit.engine.config import TrainConfig
from cvkit.models.classification.config import ClassifierConfig
from cvkit.models.config import LossConfig, ModelConfig, PostprocessConfig
from cvkit.ops.anchors import AnchorConfig
from cvkit.transforms.config import TransformsConfig

__all__ = ["RunConfig", "load_run_config", "run_config_from_dict", "to_dict"]


@dataclass(frozen=True)
class RunConfig:
    task: Literal["detect", "classify"] = "detect"  # what the run trains
    name: str = "default"  # run name: the run folder is <train.output_dir>/<name>
    data: DataConfig = field(default_factory=DataConfig)
    transforms: TransformsConfig = field(default_factory=TransformsConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # task: classify


def run_config_from_dict(
    raw: dict[str, Any], source: str = "config", overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Strictly map a plain dict onto :class:`RunConfig` and check the names it picks (``model.backbone``,
    ``model.arch``, ``classifier.name``) before anything is built.

    Errors name the key path and where its value came from: the ``--set`` override among ``overrides`` (already
    applied to ``raw``) that set it, else ``source``.
    """
    try:
        return _checked(raw)
    except ConfigError as exc:
        raise located(exc, source, overrides) from None
    except ValueError as exc:  # a section's own __post_init__ check
        raise ConfigError(f"{source}: {exc}") from None


def _checked(raw: dict[str, Any]) -> RunConfig:
    from cvkit.models.build import BACKBONES, DETECTORS
    from cvkit.models.classification.build import MODELS

    cfg = from_dict(RunConfig, raw)
    if cfg.data.format not in ("synthetic", "synthetic_cls") and not cfg.data.root:
        raise ConfigError(f"data.root must name the dataset folder for data.format={cfg.data.format!r}",
                          "data.root", "data.format")
    if cfg.task == "detect":
        check_choice(cfg.model.arch, DETECTORS, "model.arch")
        check_choice(cfg.model.backbone, BACKBONES, "model.backbone")
        if tuple(cfg.anchors.image_size) != tuple(cfg.transforms.size):
            raise ConfigError(
                f"anchors.image_size {list(cfg.anchors.image_size)} must equal transforms.size "
                f"{list(cfg.transforms.size)} (the network input the anchors are made for)",
                "anchors.image_size", "transforms.size",
            )
    else:
        check_choice(cfg.classifier.name, MODELS, "classifier.name")
    return cfg


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a YAML run config, apply ``a.b=c`` overrides, validate every section (errors name the file, or the
    override that set the bad value)."""
    raw = apply_overrides(load_yaml(path), overrides)
    return run_config_from_dict(raw, str(path), overrides)
