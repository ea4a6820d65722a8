"""The baselines: each measured piece of rcl written the usual way, to time rcl against.

- SimCLR's augmentation as torchvision per-image PIL transforms (RandomResizedCrop, flip, ColorJitter p 0.8,
  grayscale p 0.2), and the usual two-view dataset around it;
- NT-Xent (Chen et al. 2020) as the common SimCLR repositories write it;
- minibatch linear CKA (Nguyen et al. 2021) as a loop over layer pairs of the unbiased HSIC (Song et al. 2012).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def torchvision_simclr_transform():
    """torchvision's per-image SimCLR pipeline (the main study's augmentation), ending in ToTensor()."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
        ]
    )


class PilPairs(torch.utils.data.Dataset):
    """The usual SimCLR dataset: each item is two torchvision-augmented views of one uint8 HWC image."""

    def __init__(self, images_nhwc, transform) -> None:
        self.images = images_nhwc  # numpy uint8 [N, H, W, 3]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return self.transform(image), self.transform(image)


def textbook_nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent as the common SimCLR repositories write it: positives and negatives gathered, then cross-entropy."""
    batch = z1.shape[0]
    n = 2 * batch
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    positives = torch.cat([torch.diag(sim, batch), torch.diag(sim, -batch)]).reshape(n, 1)
    mask = ~torch.eye(n, dtype=torch.bool, device=z.device)
    idx = torch.arange(batch, device=z.device)
    mask[idx, idx + batch] = False
    mask[idx + batch, idx] = False
    negatives = sim[mask].reshape(n, -1)
    logits = torch.cat([positives, negatives], dim=1)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=z.device))


def _gram(x: Tensor) -> Tensor:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    return x @ x.T


def _hsic1(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741
    """Unbiased HSIC of two Gram matrices (Song et al. 2012), written out term by term."""
    n = k.shape[0]
    k = k.clone().fill_diagonal_(0)
    l = l.clone().fill_diagonal_(0)  # noqa: E741
    ones = torch.ones(n, 1, dtype=k.dtype, device=k.device)
    term1 = torch.trace(k @ l)
    term2 = (ones.T @ k @ ones) * (ones.T @ l @ ones) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (ones.T @ k @ l @ ones)
    return ((term1 + term2 - term3) / (n * (n - 3))).reshape(())


def pairwise_minibatch_cka(batches: Sequence[Sequence[Tensor]]) -> Tensor:
    """Minibatch linear CKA the straightforward way: for every batch and every layer pair, two Grams and one HSIC.

    batches: a list of batches, each a list of ``L`` activations ``[B, ...]``. Returns ``[L, L]`` float64 (CPU).
    """
    n_layers = len(batches[0])
    device = batches[0][0].device
    hsic = torch.zeros(n_layers, n_layers, dtype=torch.float64, device=device)
    for feats in batches:
        for i in range(n_layers):
            for j in range(n_layers):
                hsic[i, j] += _hsic1(_gram(feats[i]), _gram(feats[j]))
    diag = hsic.diagonal()
    return (hsic / torch.outer(diag, diag).sqrt()).cpu()
