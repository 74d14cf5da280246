import pytest

from pipeline import search, select, spaces
from pipeline.registry import Registry, UnknownNameError


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownNameError) as info:
        spaces.get_space("dartz")
    assert "unknown search space 'dartz'" in str(info.value)
    assert "darts" in str(info.value)


def test_registries_hold_the_foundation_methods():
    assert "darts" in search.METHODS
    assert "magnitude" in select.METHODS
    assert "darts" in spaces.SPACES


def test_double_registration_is_an_error():
    registry = Registry("thing")
    registry.register("a")(object())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(object())


def test_import_submodules_imports_the_modules_that_register(tmp_path, monkeypatch):
    """Registering modules are found without a list; helpers (a stage entry) stay unimported."""
    import importlib
    import sys

    package = tmp_path / "toyreg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pipeline.registry import Registry, import_submodules\n"
        "THINGS = Registry('thing')\n"
        "import_submodules(__name__, __path__)\n"
    )
    (package / "one.py").write_text("from toyreg import THINGS\nTHINGS.register('one')(object())\n")
    (package / "helper.py").write_text("raise RuntimeError('a helper is imported by who uses it')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toyreg")
    try:
        assert toy.THINGS.names() == ["one"]
        assert "toyreg.helper" not in sys.modules
    finally:
        for name in [m for m in sys.modules if m == "toyreg" or m.startswith("toyreg.")]:
            del sys.modules[name]
