"""What the speed benchmark measures and at which size: the report's schema, the settings both sides of every pair
share (attack, temperature, learning rate) and the work sizes (``tiny``, ``small``, ``full``).

The attack is the main study's PGD-10 (L-inf 8/255, step 2/255, Madry et al. 2018); the contrastive loss is SimCLR's
NT-Xent at temperature 0.5 (Chen et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = 3  # 2: the compiled training step (ours_compiled, ratio_compiled); 3: the CPU precision comparison
EPOCH_IMAGES = 50_000  # a CIFAR-10 training epoch
CKA_IMAGES = 10_000  # the CKA target: 10,000 test images
EPS, ALPHA, PGD_STEPS = 8 / 255, 2 / 255, 10
TEMPERATURE = 0.5
LR = 3e-4
CKA_TOLERANCE = 1e-6  # max |ours - baseline| over the CKA matrix (both float64)
CPU_WIDTHS = (8, 16, 32)  # ResNet-18 widths of the CPU precision comparison (laptop-sized networks)
MATMUL_N = 2048  # side of the square matrices of the CPU matmul peak


@dataclass(frozen=True)
class BenchSize:
    """How much work each measurement does (``small`` for a CPU minute, ``full`` for the issue's GPU targets)."""

    width: int  # ResNet-18 base width
    batch: int  # training and attack batch size
    train_batches: int  # batches per timed SimCLR pass (each side)
    pgd_batches: int  # batches per timed PGD pass
    augment_images: int  # images per timed augmentation pass
    cka_batch: int  # examples per CKA minibatch
    cka_batches: int  # minibatches per timed CKA pass
    finetune_batches: int  # batches per timed PGD-10 fine-tuning pass
    head_hidden: int
    head_out: int
    cpu_widths: tuple[int, ...] = CPU_WIDTHS  # the CPU precision comparison (run on CPU only)
    cpu_batch: int = 128


SIZES = {
    # the GPU check's CPU dry run (rcl.bench.gpu_check --dry-run): every code path in seconds, figures meaningless
    "tiny": BenchSize(
        width=2,
        batch=8,
        train_batches=2,
        pgd_batches=1,
        augment_images=16,
        cka_batch=8,
        cka_batches=2,
        finetune_batches=1,
        head_hidden=8,
        head_out=4,
        cpu_widths=(2,),
        cpu_batch=8,
    ),
    "small": BenchSize(
        width=8,
        batch=64,
        train_batches=6,
        pgd_batches=1,
        augment_images=256,
        cka_batch=64,
        cka_batches=2,
        finetune_batches=1,
        head_hidden=64,
        head_out=32,
    ),
    "full": BenchSize(
        width=64,
        batch=512,
        train_batches=8,
        pgd_batches=2,
        augment_images=4096,
        cka_batch=256,
        cka_batches=4,
        finetune_batches=2,
        head_hidden=512,
        head_out=100,
    ),
}
