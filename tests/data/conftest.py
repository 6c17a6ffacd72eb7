import pytest

from cvkit.data.synthetic import SyntheticConfig, generate_classification, generate_detection

SMALL = SyntheticConfig(num_train=24, num_val=8)


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cvkit-cache")


@pytest.fixture(scope="session")
def synthetic_root(synthetic_cache):
    """A small built-in shapes detection dataset (24 train, 8 val images)."""
    return generate_detection(SMALL, synthetic_cache, progress=False)


@pytest.fixture(scope="session")
def synthetic_cls_root(synthetic_cache):
    return generate_classification(SyntheticConfig(num_train=20, num_val=10), synthetic_cache, progress=False)
