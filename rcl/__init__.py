"""rcl: a runnable course on contrastive learning and adversarial robustness.

Modules (one concern each): ``profiles`` (sizes per profile), ``checks`` (how a setting is checked
where it enters), ``runtime`` (device, precision, seeds), ``data`` (datasets and the device-resident
loader; ``imagefolder`` reads image-folder trees, ``synthetic`` draws the synthetic images),
``augment`` (batched per-sample augmentation), ``models``, ``checkpoint``, ``losses``, ``attacks``,
``cka``, ``train`` (the training methods; ``train_config`` their settings, optimiser and schedule,
``train_loop`` the epoch loop they share), ``evaluate``, ``autoattack`` (the reference AutoAttack
suites), ``course`` (a chapter's set-up), ``study`` (the main study's recipes), ``acl`` (Jiang et
al.'s recipes), ``false_negatives`` (Gupta et al.'s), ``references`` (the papers' numbers),
``paper_claims`` (the register of the papers' claims), ``results``, ``plots``, ``widgets``,
``reproduce`` (papermill runner) and ``bench``.
"""

__version__ = "0.1.0"
