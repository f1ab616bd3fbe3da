import pytest

from rdistill.data.imagenet import IMAGENET_WNIDS, SUBSETS, class_name, imagenet_label, is_imagenet_wnid


def test_wnids_are_the_1000_sorted_imagenet_classes():
    assert len(IMAGENET_WNIDS) == 1000
    assert list(IMAGENET_WNIDS) == sorted(set(IMAGENET_WNIDS))
    assert IMAGENET_WNIDS[0] == "n01440764"  # tench, class 0 of every ImageNet classifier
    assert IMAGENET_WNIDS[-1] == "n15075141"  # toilet tissue, class 999


def test_imagewoof_labels_are_imagenet_indices_not_folder_order():
    # SPEC.md section 4 order -> index in the sorted 1000-WNID list
    labels = [imagenet_label(w) for w in SUBSETS["imagewoof"]]
    assert labels == [193, 182, 258, 162, 155, 167, 159, 273, 207, 229]


def test_imagenette_labels_match_the_well_known_indices():
    # tench, English springer, cassette player, chain saw, church, French horn, garbage truck,
    # gas pump, golf ball, parachute
    assert [imagenet_label(w) for w in SUBSETS["imagenette"]] == [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


def test_subsets_are_ten_distinct_imagenet_wnids_in_spec_order():
    assert list(SUBSETS) == ["imagewoof", "imagenette", "imageidc"]
    for name, wnids in SUBSETS.items():
        assert len(set(wnids)) == 10, name
        assert all(is_imagenet_wnid(w) for w in wnids), name
    assert SUBSETS["imageidc"][0] == "n02869837" and SUBSETS["imageidc"][-1] == "n01773797"


@pytest.mark.parametrize("wnid", ["n99999999", "dog", ""])
def test_unknown_wnid_raises_naming_it(wnid):
    with pytest.raises(ValueError, match=repr(wnid)):
        imagenet_label(wnid)
    assert not is_imagenet_wnid(wnid)


def test_class_name_is_the_first_lemma():
    assert class_name("n02099601") == "golden retriever"
    assert class_name("n02115641") == "dingo"  # "dingo, warrigal, ..."
    assert class_name("n01440764") == "tench"
    with pytest.raises(ValueError, match="n00000000"):
        class_name("n00000000")
