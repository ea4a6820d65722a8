"""rcl: a runnable course on contrastive learning and adversarial robustness.

What a chapter imports, one concern per module:

- the data: ``data`` (datasets by name, the device-resident loader), ``imagefolder`` (a folder tree of images, e.g.
  the CIFAR-10 JPEG copy), ``synthetic`` (the offline stand-in images), ``augment`` (batched per-sample
  augmentation on the device);
- the models and their training: ``models`` (CIFAR ResNets, heads, dual BatchNorm, layer taps), ``losses``
  (NT-Xent, SupCon, false-negative removal, TRADES), ``train`` (supervised, contrastive, ACL and fine-tuning
  recipes), ``train_loop`` (the epoch loop they share: resume, divergence watch, checkpoints), ``train_config``
  (optimiser and schedule), ``checkpoint`` (atomic, verified saves), ``runtime`` (device, precision, seeds),
  ``fileio`` (atomic writes);
- attacking and measuring: ``attacks`` (FGSM, PGD), ``autoattack`` (the reference AutoAttack suites), ``evaluate``
  (clean and robust accuracy, threat models I/II, per-layer probes), ``cka`` (linear, RBF and minibatch CKA);
- the three papers' experiments: ``study`` (the main study's schemes and scenarios), ``acl`` (Jiang et al.),
  ``false_negatives`` (Gupta et al.), ``references`` (the papers' own numbers), ``paper_claims`` (the register of
  their claims);
- a chapter's set-up and results: ``profiles`` (sizes per profile), ``checks`` (how every setting is checked),
  ``course`` (a chapter's set-up), ``results`` (tables on disk), ``verdicts`` (claims with their noise),
  ``plots``, ``widgets``.

Behind them, in subpackages of their own: ``rcl.reproduce`` (``python -m rcl.reproduce``: the headless runner, its
jobs, scheduler, summary and reference runs) and ``rcl.bench`` (``python -m rcl.bench``: speed as ratios against
baselines, and the GPU check).
"""

__version__ = "0.1.0"
