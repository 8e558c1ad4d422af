from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme():
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in README, f"{name.upper()} missing from README"


def test_environment_is_read_and_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    monkeypatch.setenv("API_PORT", "9001")
    settings = Settings()
    assert settings.api_port == 9001
    assert settings.resolved_job_store_url == f"sqlite:///{tmp_path / 'jobs.db'}"
    assert settings.resolved_data_root == str(tmp_path / "data")
    monkeypatch.setenv("MAX_BODY_BYTES", "12")
    with pytest.raises(ValidationError):
        Settings()
