"""The download cache (issue 18): HRMNET_CACHE that is a file, cannot be created or is
read-only is one line about the cache, before any connection; never "cannot connect"."""
from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.hub import imagenet_backbone
from tests.mounts import read_only

OFFLINE = "http://127.0.0.1:9/resnet18d.safetensors"  # nothing listens there


def _env(cache) -> dict:
    return {"HRMNET_CACHE": str(cache), "HRMNET_BACKBONE_URL": OFFLINE, "HOME": "/nonexistent"}


def test_a_cache_that_is_a_file_or_cannot_be_created_is_one_line(tmp_path):
    afile = tmp_path / "cache"
    afile.write_text("not a folder")
    for cache in (afile, afile / "sub"):
        with pytest.raises(UserError) as err:
            imagenet_backbone(environ=_env(cache))
        message = str(err.value)
        assert "download cache is not a writable folder" in message and "HRMNET_CACHE" in message, message
        assert "cannot connect" not in message and "\n" not in message
    assert afile.read_text() == "not a folder"


def test_a_read_only_cache_is_not_reported_as_no_connection(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with read_only(cache):
        with pytest.raises(UserError) as err:
            imagenet_backbone(environ=_env(cache))
    assert str(err.value).startswith(f"{cache}: the download cache is not a writable folder")
    assert "cannot connect" not in str(err.value)


def test_a_writable_cache_offline_still_says_cannot_connect(tmp_path):
    with pytest.raises(UserError, match="cannot connect"):
        imagenet_backbone(environ=_env(tmp_path / "new" / "cache"))
