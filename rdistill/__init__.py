"""rdistill: dataset distillation via minimax diffusion (Gu et al., CVPR 2024) on Ray."""

__version__ = "0.1.0"
