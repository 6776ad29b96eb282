import sys

import pytest

from winnow.errors import UsageError
from winnow.extras import require


def test_require_imports_an_installed_module():
    assert require("json", "anything").dumps([1]) == "[1]"


def test_a_missing_extra_names_the_feature_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "deltalake", None)  # as if not installed
    with pytest.raises(UsageError) as e:
        require("deltalake", "--format delta")
    message = str(e.value)
    assert "--format delta" in message
    assert "uv sync --extra delta" in message
    assert "pip install 'winnow[delta]'" in message
    assert "\n" not in message


def test_a_missing_package_without_an_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "nosuchpkg_winnow", None)
    with pytest.raises(UsageError, match="nosuchpkg_winnow"):
        require("nosuchpkg_winnow", "a feature")
