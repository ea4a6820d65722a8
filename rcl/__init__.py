"""rcl: a runnable course on contrastive learning and adversarial robustness.

Modules (one concern each): ``profiles`` (sizes per profile), ``runtime`` (device, precision,
seeds), ``data`` (datasets and the device-resident loader), ``augment`` (batched per-sample
augmentation), ``models``, ``checkpoint``, ``losses``, ``attacks``, ``cka``, ``train``,
``evaluate``, ``autoattack`` (the reference AutoAttack suites), ``course`` (a chapter's set-up),
``study`` (the main study's recipes), ``acl`` (Jiang et al.'s recipes), ``false_negatives`` (Gupta et
al.'s), ``references`` (the papers' numbers), ``paper_claims`` (the register of the papers' claims),
``results``, ``plots``, ``widgets``, ``reproduce`` (papermill runner) and ``bench``.
"""

__version__ = "0.1.0"
