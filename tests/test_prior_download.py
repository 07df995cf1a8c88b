"""prior.download: a hub id missing from the local cache is fetched only when asked, with the files load_prior reads."""

from __future__ import annotations

import pytest

from sds3d.config import load_config
from sds3d.priors import DOWNLOAD_PATTERNS, PriorError, download_command, resolve_prior_path


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """huggingface_hub.snapshot_download replaced: records its calls; 'cached' succeeds only without network."""
    import huggingface_hub

    calls = []

    def fake(repo_id, cache_dir=None, local_files_only=False, allow_patterns=None):
        calls.append({"repo_id": repo_id, "local_files_only": local_files_only, "allow_patterns": allow_patterns})
        if local_files_only:
            raise FileNotFoundError("not cached")
        if repo_id == "org/missing":
            raise OSError("404 Client Error: Repository Not Found")
        (tmp_path / "snap").mkdir(exist_ok=True)
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


def test_without_download_a_missing_id_is_one_line_naming_both_ways_to_get_it(hub):
    with pytest.raises(PriorError) as e:
        resolve_prior_path("org/model")
    assert "prior.download=true" in str(e.value) and download_command("org/model") in str(e.value)
    assert hub == [{"repo_id": "org/model", "local_files_only": True, "allow_patterns": None}]  # never the network


def test_download_fetches_what_load_prior_reads(hub, tmp_path):
    assert resolve_prior_path("org/model", download=True) == tmp_path / "snap"
    assert hub == [{"repo_id": "org/model", "local_files_only": False, "allow_patterns": list(DOWNLOAD_PATTERNS)}]
    with pytest.raises(PriorError, match=r"prior.download=true could not fetch 'org/missing'.*Repository Not Found"):
        resolve_prior_path("org/missing", download=True)


def test_download_is_a_config_key_off_by_default():
    assert load_config(None, ["prompt=a red cube"]).prior.download is False
    assert load_config(None, ["prompt=a red cube", "prior.download=true"]).prior.download is True
