import smartbms
from smartbms import version


def test_version_is_semver():
    parts = version.VERSION.split(".")
    assert len(parts) == 3, version.VERSION
    for p in parts:
        assert int(p) >= 0


def test_package_exports_version():
    assert smartbms.__version__ == version.VERSION
    assert version.PROJECT == "smartbms"
