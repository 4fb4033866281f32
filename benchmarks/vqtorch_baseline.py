"""The reference tokenizer (c) of the quality benchmark: our encoder/decoder around vector-quantize-pytorch's
`VectorQuantize` (k-means init, dead-code expiry, low-dimensional lookup), wrapped to this package's quantizer API.

Not part of the package: `vector_quantize_pytorch` is a benchmark-only dependency.
"""
from __future__ import annotations
import torch
from torch import nn

from vqvae_kaggle.config import Config
from vqvae_kaggle.model import Tokenizer
from vqvae_kaggle.quantizer import batch_code_stats


class VQTorchQuantizer(nn.Module):
    "vector_quantize_pytorch.VectorQuantize behind our quantizer API: forward -> (z_q, aux), decode_indices, codebook_size."
    def __init__(self, dim: int, codebook_size: int = 1024, codebook_dim: int | None = 32, kmeans_init: bool = True,
                 threshold_ema_dead_code: float = 2, **kwargs):
        super().__init__()
        try: from vector_quantize_pytorch import VectorQuantize
        except ImportError as e:
            raise ImportError('the vector-quantize-pytorch baseline needs `pip install vector-quantize-pytorch`') from e
        # commitment_weight=1: the trainer's loss applies cfg.loss.commitment, as for our own quantizer
        self.vq = VectorQuantize(dim=dim, codebook_size=codebook_size, codebook_dim=codebook_dim, kmeans_init=kmeans_init,
                                 threshold_ema_dead_code=threshold_ema_dead_code, accept_image_fmap=True,
                                 commitment_weight=1.0, **kwargs)
        self.dim, self.codebook_size = dim, codebook_size

    def forward(self, z: torch.Tensor):
        z_q, indices, commit = self.vq(z)
        perplexity, usage = batch_code_stats(indices, self.codebook_size)
        return z_q, dict(commit_loss=commit.float().sum(), perplexity=perplexity, usage=usage, indices=indices)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        "Codes (B,h,w) -> decoder input (B,dim,h,w). (The library's get_output_from_indices mis-shapes image maps.)"
        if indices.dim() != 3: raise ValueError(f'decode_indices expects (B, h, w) indices, got {tuple(indices.shape)}')
        return self.vq.project_out(self.vq.codebook[indices]).permute(0, 3, 1, 2).contiguous()


def vqtorch_tokenizer(cfg: Config, codebook_dim: int = 32, threshold_ema_dead_code: float = 2, seed: int | None = None,
                      **kwargs) -> Tokenizer:
    "cfg's encoder/decoder with a `VQTorchQuantizer` of cfg's codebook size (seeded: its k-means uses the global RNG)."
    torch.manual_seed(cfg.run.seed if seed is None else seed)
    model = Tokenizer(cfg)
    model.quantizer = VQTorchQuantizer(cfg.model.embed_dim, cfg.quantizer.codebook_size, codebook_dim=codebook_dim,
                                       threshold_ema_dead_code=threshold_ema_dead_code, **kwargs)
    return model
