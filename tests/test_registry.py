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
