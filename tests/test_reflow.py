"""Reflow (Liu et al. 2023): the pairs a teacher flow draws (its own samples of the seeded sequence, whatever the
batch), a student that starts from the teacher's weights and keeps no teacher in its checkpoints, the known answer
on a Gaussian (reflow's one Euler step follows the teacher's map, where a plain flow's collapses to the mean), and
the refusals of a wrong teacher before training."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from helpers import TINY, TINY_ITERATIVE, compose_config
from test_diffusion_flow import gaussian_velocity, stub, tiny_unet

from gdm.app import run, user_error
from gdm.checkpoints import load_model
from gdm.errors import GdmError
from gdm.models.base import latent_noise
from gdm.models.diffusion import Diffusion
from gdm.models.flow import PAIRS_SEED_KEY, Flow
from gdm.models.reflow import Couplings
from gdm.nets.time_mlp import TimeMLP
from gdm.nets.unet import UNet

MEAN, STD = torch.tensor([0.5, -0.3]), 0.4


def gaussian_teacher(**kw) -> Flow:
    """A flow whose velocity is the exact one for data N(MEAN, STD^2 I): its ODE maps noise z to MEAN + STD z."""
    return Flow((2,), stub(gaussian_velocity(MEAN, STD)), sampler="heun", steps=16, **kw)


def test_pairs_are_the_teachers_samples_of_the_seeded_sequence_whatever_the_batch():
    teacher = gaussian_teacher()
    pairs = Couplings.draw(teacher, 7, seed=3, batch_size=3)
    torch.testing.assert_close(pairs.noise, latent_noise(range(7), 2, 3))
    torch.testing.assert_close(pairs.samples, teacher.generate(range(7), seed=3))
    # the exact map, to within Heun's error
    torch.testing.assert_close(pairs.samples, MEAN + STD * pairs.noise, atol=5e-3, rtol=0)
    torch.testing.assert_close(Couplings.draw(teacher, 7, seed=3, batch_size=7).samples, pairs.samples)
    assert pairs.labels is None and len(pairs) == 7
    conditional = Flow((1, 8, 8), tiny_unet(), num_classes=3, conditional=True, steps=2)
    labelled = Couplings.draw(conditional, 6, seed=3, batch_size=4)
    torch.testing.assert_close(labelled.labels, conditional.sample_labels(range(6), 3))
    torch.testing.assert_close(labelled.samples.clamp(-1, 1), conditional.generate(range(6), seed=3), atol=1e-5, rtol=0)


@pytest.mark.slow  # trains two small nets (about 20 s on 2 cores)
def test_one_euler_step_of_a_reflow_follows_the_teachers_map_and_a_plain_flows_does_not():
    pairs = Couplings.draw(gaussian_teacher(), 2000, seed=1)
    net = partial(TimeMLP, width=64, depth=2)
    reflow, plain = Flow((2,), net, sampler="euler", steps=1), Flow((2,), net, sampler="euler", steps=1)
    torch.manual_seed(0)
    for model in (reflow, plain):
        opt = torch.optim.Adam(model.net.parameters(), lr=2e-3)
        for _ in range(300):
            x0, x1, _ = pairs.batch(256)
            if model is plain:  # independent pairs: the same images, other noise
                x0 = torch.randn_like(x0)
            loss = model.path_loss(x0, x1, None).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.net_ema.update(model.net, 256)
    noise = latent_noise(range(2000), 2, seed=99)  # noise it never trained on
    reflowed = reflow.generate(range(2000), seed=99)
    assert float((reflowed - (MEAN + STD * noise)).norm(dim=1).mean()) < 0.06  # the teacher's map, in one step
    torch.testing.assert_close(torch.cov(reflowed.T), STD**2 * torch.eye(2), atol=0.02, rtol=0)
    # one step of the plain flow lands at the velocity's start, E[x1 - x0 | x0] = MEAN - x0: every sample near MEAN
    collapsed = plain.generate(range(2000), seed=99)
    assert float(torch.cov(collapsed.T).trace()) < 0.03
    torch.testing.assert_close(collapsed.mean(0), MEAN, atol=0.1, rtol=0)


def test_the_student_starts_from_the_teachers_ema_weights_and_checkpoints_no_teacher():
    teacher = Flow((1, 8, 8), tiny_unet(), steps=3)
    with torch.no_grad():
        for p in teacher.net_ema.module.parameters():
            p.add_(torch.randn_like(p))  # EMA weights apart from the net's: the student takes the EMA's
    student = Flow((1, 8, 8), tiny_unet(), teacher="t.ckpt", teacher_model=teacher, teacher_sampler="euler",
                   teacher_steps=4)
    for mine, its in zip(student.net.state_dict().values(), teacher.net_ema.module.state_dict().values(), strict=True):
        torch.testing.assert_close(mine, its)
    torch.testing.assert_close(student.net_ema.module.state_dict(), teacher.net_ema.module.state_dict())
    assert (teacher.sampler_name, teacher.steps) == ("euler", 4)
    assert set(student.state_dict()) == set(Flow((1, 8, 8), tiny_unet()).state_dict())
    assert "teacher_model" not in dict(student.named_modules())
    checkpoint = {"state_dict": student.state_dict()}
    student.pairs_seed = 12345
    student.on_save_checkpoint(checkpoint)
    resumed = Flow((1, 8, 8), tiny_unet(), teacher="t.ckpt")
    resumed.on_load_checkpoint(checkpoint)
    assert checkpoint[PAIRS_SEED_KEY] == resumed.pairs_seed == 12345


def test_every_process_draws_the_pairs_of_rank_0s_seed():
    from types import SimpleNamespace

    teacher = gaussian_teacher()
    student = Flow((2,), partial(TimeMLP, width=8, depth=1), teacher="t.ckpt", teacher_pairs=5)
    object.__setattr__(student, "teacher_model", teacher)
    student._trainer = SimpleNamespace(strategy=SimpleNamespace(broadcast=lambda obj, src: 1234 if src == 0 else obj))
    student.on_fit_start()  # a process other than rank 0 (its own torch seed) takes rank 0's broadcast pair seed
    assert student.pairs_seed == 1234 and student.teacher_model is None
    torch.testing.assert_close(student.couplings.noise, latent_noise(range(5), 2, 1234))


def test_a_resume_keeps_what_draws_the_pairs_and_the_protocol_records_them():
    from gdm.checkpoints import changed_settings

    net = tiny_unet()
    saved = {"hyper_parameters": dict(Flow((1, 8, 8), net, teacher="a.ckpt", teacher_pairs=50).hparams)}
    moved = Flow((1, 8, 8), net, teacher="b.ckpt", teacher_pairs=50)
    assert changed_settings(moved, saved, "last.ckpt") == ["teacher: 'a.ckpt' -> 'b.ckpt'"]  # the file may move
    with pytest.raises(GdmError) as caught:
        changed_settings(Flow((1, 8, 8), net), saved, "last.ckpt")
    assert str(caught.value) == ("ckpt_path=last.ckpt is a reflow of model.teacher=a.ckpt, whose pairs a resumed run "
                                 "draws again: set model.teacher to where that file is now.")
    with pytest.raises(GdmError, match=r"other settings than this run's \(model.teacher_pairs=60, the checkpoint's "
                                       r"is 50\)"):
        changed_settings(Flow((1, 8, 8), net, teacher="a.ckpt", teacher_pairs=60), saved, "last.ckpt")
    plain = {"hyper_parameters": dict(Flow((1, 8, 8), net).hparams)}
    with pytest.raises(GdmError, match="trained on independent pairs, not a teacher's: drop model.teacher"):
        changed_settings(moved, plain, "last.ckpt")
    moved.pairs_seed = 7
    assert moved.sampling_protocol()["reflow"] == {"teacher": "b.ckpt", "pairs": 50, "pairs_seed": 7,
                                                   "teacher_sampler": None, "teacher_steps": None}
    assert "reflow" not in Flow((1, 8, 8), net).sampling_protocol()  # plain flows keep their protocol ids


@pytest.mark.parametrize(("teacher", "student", "message"), [
    (lambda: Diffusion((1, 8, 8), tiny_unet()), {}, "is a Diffusion checkpoint, and reflow needs a flow's"),
    (lambda: Flow((1, 8, 8), tiny_unet(), num_classes=3, conditional=True), {"num_classes": 3},
     "is conditional and this model is not: set conditional=true"),
    (lambda: Flow((1, 8, 8), tiny_unet()), {"net": partial(UNet, channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                                            patch_size=2)}, "has another net than this model's"),
], ids=["diffusion", "conditioning", "net"])
def test_a_teacher_of_another_kind_is_refused_in_one_sentence(teacher, student, message):
    kwargs = {"net": tiny_unet(), **student}
    with pytest.raises(GdmError) as caught:
        Flow((1, 8, 8), teacher="t.ckpt", teacher_model=teacher(), **kwargs)
    assert f"teacher=t.ckpt {message}" in str(caught.value) and "\n" not in str(caught.value)


SMALL = [*TINY, *TINY_ITERATIVE, "model=flow", "logger=none", "test_after_fit=false", "metrics.fid.real_split=val",
         "metrics.fid.nearest_samples=0", "metrics.fid.num_samples=20"]


@pytest.fixture(scope="module")
def flow_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow")
    run(compose_config(SMALL, out))
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.slow  # two short runs
def test_a_reflow_run_trains_on_its_teachers_pairs_and_samples_in_its_own_steps(flow_ckpt, tmp_path, caplog):
    caplog.set_level("INFO", logger="gdm.models.flow")
    run(compose_config([*SMALL, f"model.teacher={flow_ckpt}", "model.teacher_pairs=30", "model.sampler=euler",
                        "model.steps=1"], tmp_path / "reflow"))
    checkpoint = torch.load(tmp_path / "reflow/checkpoints/last.ckpt", weights_only=True)
    assert isinstance(checkpoint[PAIRS_SEED_KEY], int)
    assert not any(key.startswith("teacher") for key in checkpoint["state_dict"])
    model = load_model(tmp_path / "reflow/checkpoints/last.ckpt")  # no teacher needed to evaluate or sample
    assert model.sampling_protocol()["nfe"] == 1 and model.couplings is None
    assert f"reflow: 30 pairs drawn by {flow_ckpt} (unipc, 2 steps, seed {checkpoint[PAIRS_SEED_KEY]})" in caplog.text


def test_the_reflow_recipe_without_a_teacher_is_refused(tmp_path):
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it
        run(compose_config(["experiment=digits_reflow", *TINY, "logger=none"], tmp_path / "reflow"))
    assert str(user_error(caught.value)) == (
        "model.teacher=RUN/checkpoints/last.ckpt is not a file: point it at a trained flow's checkpoint, e.g. a "
        "model=flow run's checkpoints/last.ckpt.")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "size", "conditioning"])
def test_a_wrong_teacher_file_is_refused_before_training(case, flow_ckpt, tmp_path):
    path = tmp_path / "nowhere.ckpt" if case == "missing" else flow_ckpt
    overrides = [*SMALL, f"model.teacher={path}", *{"size": ["data.image_size=32"],
                                                    "conditioning": ["model.conditional=true"]}.get(case, [])]
    with pytest.raises(Exception) as caught:  # noqa: B017 - Hydra may wrap it
        run(compose_config(overrides, tmp_path / "reflow"))
    mistake = str(user_error(caught.value))
    message = {"missing": "is not a file: point it at a trained flow's checkpoint",
               "size": "was trained on 1 x 16 x 16 images (channels x height x width), and this data's are "
                       "1 x 32 x 32",
               "conditioning": "is unconditional and this model is not: set model.conditional=false"}[case]
    assert f"model.teacher={path} {message}" in mistake and "\n" not in mistake
    assert not (tmp_path / "reflow" / "checkpoints").exists()
