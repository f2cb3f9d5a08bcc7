"""Generative adversarial networks: the 2014 fully connected GAN and DCGAN (2015), trained by the engine.

>>> from cnnlab import generative
>>> result = generative.train_gan({"data": "mnist", "epochs": 5})           # `cnnlab gan train --data mnist`
>>> generative.sample_run(result.run.run_dir.path, n=64)                   # `cnnlab gan sample RUN -n 64`
>>> generative.interpolate_run(result.run.run_dir.path)                    # `cnnlab gan interpolate RUN`

The discriminators are models of the zoo (``dcgan-discriminator-28/32/64``, ``gan-mlp-discriminator``: the
classifier contract, one logit); the generators have their own small registry (:mod:`.architectures`). The task
(:class:`GANTask`) is an engine task like classification: checkpoints, exact resume, AMP, DDP come with it.
Measuring (:mod:`.measure`): class coverage and a Fréchet distance in a cnnlab classifier's feature space. The
discriminator as features (:mod:`.probe`): a linear probe on it against the same net trained from scratch.
"""

from cnnlab.generative.architectures import (
    GENERATORS,
    GeneratorInfo,
    build_gan,
    create_generator,
    generator_name,
    list_generators,
    register_generator,
)
from cnnlab.generative.measure import (
    ClassifierFeatures,
    Coverage,
    GanMeasurement,
    NearestCopies,
    class_coverage,
    classifier_score,
    frechet_distance,
    measure_gan,
    nearest_training_images,
)
from cnnlab.generative.probe import ProbeCell, ProbeResult, discriminator_features, probe_discriminator
from cnnlab.generative.runs import (
    ARCH_RECIPES,
    GAN_DEFAULTS,
    GAN_FLAGS,
    ArchRecipe,
    GanRun,
    GanTrainResult,
    SampleResult,
    interpolate_run,
    load_gan,
    sample_run,
    save_grid,
    summary_model,
    train_gan,
)
from cnnlab.generative.task import GANTask, diagnose, diagnose_collapse, diagnose_coverage, sample_diversity

__all__ = [
    "ARCH_RECIPES",
    "GAN_DEFAULTS",
    "GAN_FLAGS",
    "GENERATORS",
    "ArchRecipe",
    "ClassifierFeatures",
    "Coverage",
    "GANTask",
    "GanMeasurement",
    "GanRun",
    "GanTrainResult",
    "GeneratorInfo",
    "NearestCopies",
    "ProbeCell",
    "ProbeResult",
    "SampleResult",
    "build_gan",
    "class_coverage",
    "classifier_score",
    "create_generator",
    "diagnose",
    "diagnose_collapse",
    "diagnose_coverage",
    "discriminator_features",
    "frechet_distance",
    "generator_name",
    "interpolate_run",
    "list_generators",
    "load_gan",
    "measure_gan",
    "nearest_training_images",
    "probe_discriminator",
    "register_generator",
    "sample_diversity",
    "sample_run",
    "save_grid",
    "summary_model",
    "train_gan",
]
