"""One way to derive a seed from several integers: splitmix64 folded over them.

    g = torch.Generator().manual_seed(derive(seed, STREAM_SHUFFLE, epoch))

`derive(a, b, c) = splitmix64(splitmix64(splitmix64(a) ^ b) ^ c)`: every part changes every bit of the
result (full avalanche), nearby inputs give unrelated streams, and the value fits torch's and numpy's
seeds (0 <= s < 2**64). Each use names its stream with a constant below, so two uses that share the
user's seed never share a stream.
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1

# Streams: the first part after the user's seed wherever one seed feeds several draws.
STREAM_STEP = 1  # fine-tuning: a step's noise, timesteps and label dropout
STREAM_SHUFFLE = 2  # fine-tuning: an epoch's permutation of the training set
STREAM_CARVE = 3  # the validation carve of a class
STREAM_CORESET = 4  # the random coreset of a class
STREAM_MMD = 5  # the real images MMD compares against


def splitmix64(z: int) -> int:
    """One round of splitmix64 (Steele, Lea, Flood 2014): a bijective 64-bit mix with full avalanche."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def derive(*parts: int) -> int:
    """The 64-bit seed of a tuple of integers: splitmix64(... splitmix64(splitmix64(p0) ^ p1) ... ^ pn)."""
    if not parts:
        raise ValueError("derive needs at least one integer")
    h = splitmix64(parts[0] & MASK64)
    for p in parts[1:]:
        h = splitmix64(h ^ (p & MASK64))
    return h
