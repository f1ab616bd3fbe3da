from rdistill.common.seeds import derive, splitmix64
from rdistill.generate.sampler import image_seed


def test_splitmix64_reference_vector():
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # first output of splitmix64 from state 0


def test_derive_folds_splitmix64_and_separates_every_part():
    assert derive(5) == splitmix64(5)
    assert derive(5, 7, 9) == splitmix64(splitmix64(splitmix64(5) ^ 7) ^ 9)
    assert len({derive(0, 0, 1), derive(0, 1, 0), derive(1, 0, 0), derive(0, 0, 0)}) == 4
    assert 0 <= derive(-1, 2**70) < 2**64  # any integers, folded into 64 bits


def test_image_seed_is_the_shared_scheme():
    assert image_seed(3, 4, 5) == derive(3, 4, 5)
