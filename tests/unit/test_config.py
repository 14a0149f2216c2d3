import tomllib

import pytest

from casstore.config import FORMAT_VERSION, StoreConfig, default_toml, load_config
from casstore.errors import StoreFormatError
from casstore.store import Store
from tests._helpers import json_lines


def write(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("compression", ["auto", "zstd", "none"])
def test_default_toml_loads_back(tmp_path, compression):
    config = load_config(write(tmp_path, default_toml(compression)))
    assert config.objects.compression == compression
    assert config.objects.zstd_level == 3
    assert config.locks.timeout == 30
    assert config.store.format == FORMAT_VERSION
    assert tomllib.loads(default_toml())["objects"]["compression"] == "auto"


def test_missing_file_means_defaults(tmp_path):
    assert load_config(tmp_path / "absent.toml") == StoreConfig()
    assert StoreConfig().objects.compression == "auto"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[objects]\ncompression = 'lz4'\n", "objects.compression"),
        ("[objects]\nzstd_level = 0\n", "objects.zstd_level"),
        ("[objects]\nzstd_level = 99\n", "objects.zstd_level"),
        ("[objects]\ncolour = 'red'\n", "objects.colour"),
        ("[locks]\ntimeout = -1\n", "locks.timeout"),
    ],
)
def test_invalid_values_name_the_setting(tmp_path, text, where):
    with pytest.raises(StoreFormatError) as info:
        load_config(write(tmp_path, text))
    assert where in str(info.value)
    assert "config.toml" in str(info.value)


def test_bad_toml(tmp_path):
    with pytest.raises(StoreFormatError, match="not valid TOML"):
        load_config(write(tmp_path, "[objects\n"))


def test_a_newer_format_is_refused(tmp_path):
    with pytest.raises(StoreFormatError, match="upgrade casstore"):
        load_config(write(tmp_path, f"[store]\nformat = {FORMAT_VERSION + 1}\n"))


def test_unknown_tables_are_kept_for_later_versions(tmp_path):
    config = load_config(write(tmp_path, default_toml() + "\n[remotes.origin]\nurl = 'x'\n"))
    assert config.model_extra == {"remotes": {"origin": {"url": "x"}}}


@pytest.mark.parametrize(("policy", "stored"), [("none", "none"), ("zstd", "zstd")])
def test_the_store_follows_its_config(tmp_path, policy, stored):
    data = json_lines(100_000)
    (tmp_path / "f").write_bytes(data)
    with Store.init(tmp_path / "s") as s:
        root = s.root
    (root / "config.toml").write_text(default_toml(policy))
    with Store.open(root) as s:
        assert s.describe().compression == policy
        result = s.add(tmp_path / "f")
        assert result.compression == stored
        assert s.read(result.id) == data


def test_init_writes_the_chosen_policy(tmp_path):
    with Store.init(tmp_path, compression="none") as s:
        assert load_config(s.root / "config.toml").objects.compression == "none"


def test_a_store_with_a_broken_config_does_not_open(tmp_path):
    with Store.init(tmp_path) as s:
        root = s.root
    (root / "config.toml").write_text("[objects]\ncompression = 'fast'\n")
    with pytest.raises(StoreFormatError):
        Store.open(tmp_path)
