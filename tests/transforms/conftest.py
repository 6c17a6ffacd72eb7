from tests.data.conftest import synthetic_cache, synthetic_cls_root, synthetic_root  # noqa: F401  (shared fixtures)
