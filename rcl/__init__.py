"""rcl: a runnable course on contrastive learning and adversarial robustness.

Modules (one concern each): ``profiles`` (sizes per profile), ``runtime`` (device, precision,
seeds), ``data`` (datasets and the device-resident loader), ``augment`` (batched per-sample
augmentation), ``models``, ``checkpoint``, ``losses``, ``attacks``, ``cka``, ``train``,
``evaluate``, ``study`` (the main study's recipes), ``plots``, ``widgets``, ``reproduce``
(papermill runner) and ``bench``.
"""

__version__ = "0.1.0"
