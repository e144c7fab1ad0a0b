"""A plan's URLs may carry credentials: no step stamp records them, and they are not
part of a step's identity (a new password redoes nothing)."""

from __future__ import annotations

from vitreg.study.steps import Step, file_identity, write_stamp

URL = "https://alice:hunter2@host/shards/val-{0..3}.tar?token=s3cret&x=1"


def _step(tmp_path, url: str) -> Step:
    return Step(id="extract:m:val", stage="extract", output=str(tmp_path / "m-val.zarr"),
                config={"shards": url, "batch_size": 8, "img_size": 224},
                files={"shards": [file_identity(url)]})


def test_a_stamp_records_no_credentials(tmp_path):
    step = _step(tmp_path, URL)
    write_stamp(step, {"rows": 4, "source": URL})
    text = step.stamp.read_text()
    for secret in ("alice", "hunter2", "s3cret"):
        assert secret not in text, secret
    assert "https://host/shards/val-{0..3}.tar?token=REDACTED&x=REDACTED" in text


def test_a_new_password_is_not_a_new_identity(tmp_path):
    old, new = _step(tmp_path, URL), _step(tmp_path, URL.replace("hunter2", "changed"))
    assert old.identity == new.identity and old.files == new.files
    assert old.identity != _step(tmp_path, URL.replace("val-", "train-")).identity
