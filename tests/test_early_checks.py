"""What can be known before training is refused before the first batch (issue 32.4); what can only fail at an
evaluation keeps the training so far in last.ckpt first."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, compose_config

from gdm.app import run, user_error
from gdm.models.gan import GAN

RUN = [*TINY, "data.image_size=16", "logger=none", "test_after_fit=false"]


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The GAN's training batches, counted."""
    seen = []
    step = GAN.training_step

    def counted(self, batch, batch_idx):
        seen.append(batch_idx)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(GAN, "training_step", counted)
    return seen


def refusal(overrides: list[str], tmp_path) -> str:
    with pytest.raises(Exception) as caught:  # noqa: B017 - Lightning may wrap it
        run(compose_config([*RUN, *overrides], tmp_path))
    return str(user_error(caught.value))


def no_checkpoint(tmp_path) -> bool:
    return not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.slow
def test_a_typo_in_the_monitor_is_refused_before_the_first_batch(tmp_path, batches):
    message = refusal(["monitor=val/fid_digitz"], tmp_path)
    assert message == ("monitor=val/fid_digitz is not among this run's evaluation values (val/copies_digits, "
                       "val/coverage_digits, val/density_digits, val/fid_digits, val/precision_digits, "
                       "val/recall_digits, val/sample_seconds_per_1000): set monitor= to one of them.")
    assert batches == [] and no_checkpoint(tmp_path)


@pytest.mark.parametrize(("overrides", "monitor"), [
    (["monitor=val/fid_inception"], "val/fid_inception"),  # another feature network's name
    # a metric switched off in the metrics config
    (["metrics.fid.precision_recall_k=null", "monitor=val/recall_digits"], "val/recall_digits"),
])
@pytest.mark.slow
def test_a_monitor_the_metrics_will_not_log_is_refused_before_the_first_batch(overrides, monitor, tmp_path,
                                                                              batches):
    message = refusal(overrides, tmp_path)
    assert message.startswith(f"monitor={monitor} is not among this run's evaluation values")
    assert batches == [] and no_checkpoint(tmp_path)


@pytest.mark.slow
def test_a_missing_weights_file_is_refused_before_the_first_batch(tmp_path, batches):
    missing = tmp_path / "no_such_weights.pth"
    message = refusal(["metrics.features=inception", f"metrics.inception_weights={missing}"], tmp_path)
    assert message.startswith(f"metrics.inception_weights={missing} is not a file")
    assert batches == [] and no_checkpoint(tmp_path)


@pytest.mark.slow
def test_a_monitor_only_the_first_evaluation_can_refuse_keeps_last_ckpt(tmp_path, batches):
    """A model's own validation values (val/d_real) are known only once it has logged them: the run stops at
    the first evaluation, and the training up to it is in last.ckpt."""
    message = refusal(["monitor=val/d_rael"], tmp_path)
    assert message.startswith("monitor=val/d_rael is not among this run's evaluation values (")
    logged = set(message.split(" values (", 1)[1].split("): ", 1)[0].split(", "))
    # what the metrics said they would log before the run (the first test's list), and the model's own value
    assert logged == {"val/copies_digits", "val/coverage_digits", "val/density_digits", "val/fid_digits",
                      "val/precision_digits", "val/recall_digits", "val/sample_seconds_per_1000", "val/d_real"}
    assert batches == [0, 1]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["gdm_step"] == 2 and last["global_step"] == 4  # both batches, D and G updates
    assert not (tmp_path / "checkpoints" / "best.ckpt").exists()
    status = json.loads((tmp_path / "summary.json").read_text())["status"]
    assert status.startswith("failed: GdmError: monitor=val/d_rael")
