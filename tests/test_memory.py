"""gdm.memory: the live-tensor peak of a function, the memory available, and task=translate refusing an input
whose translation cannot fit (before anything is written) instead of being killed by the OOM killer."""

from __future__ import annotations

import logging

import psutil
import pytest
import torch
from helpers import TINY_CYCLEGAN, compose_config
from PIL import Image

from gdm.app import run
from gdm.checkpoints import load_model
from gdm.errors import GdmError
from gdm.memory import available_bytes, cgroup_free_bytes, peak_tensor_bytes, scaled_peak_bytes
from gdm.nets.cyclegan import ResnetGenerator
from gdm.tasks import translate as translate_task


def test_peak_counts_tensors_alive_at_once_and_not_views_or_in_place_results():
    def chain():
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 8000 alive
        del a
        c = b + 1  # 8000 alive again, a freed
        c.add_(1)  # in place: the same storage
        c.view(10, 100)  # a view: the same storage
        return torch.ones(3000)  # 4000 (b) + 4000 (c) + 12000 = 20000

    assert peak_tensor_bytes(chain) == 20000
    assert peak_tensor_bytes(lambda: torch.ones(10, dtype=torch.uint8)) == 10
    x = torch.ones(1000)  # made before the call: not counted
    assert peak_tensor_bytes(lambda: x.add_(1)) == 0


@pytest.mark.slow
def test_generator_activations_grow_with_the_pixels_and_two_probes_give_any_size():
    net = ResnetGenerator((3, 32, 32), ngf=8, n_blocks=2).eval()
    with torch.no_grad():
        counted = {(w, h): peak_tensor_bytes(lambda w=w, h=h: net(torch.zeros(1, 3, h, w)))
                   for w, h in ((64, 64), (256, 256), (512, 128), (96, 640))}
        fitted = scaled_peak_bytes(lambda s: net(torch.zeros(1, 3, s, s)), 32)  # from 32 and 64 px
    # at full resolution a conv's and its norm's 8-channel float32 outputs (32 bytes per pixel each) are alive
    # together with the next layer's input: 64-128 bytes per pixel; the reflection pads' borders add to small images
    assert 64 <= counted[256, 256] / 256**2 < counted[64, 64] / 64**2 <= 128
    for (w, h), n in counted.items():
        assert fitted(w, h) == pytest.approx(n, rel=0.01), (w, h)


def test_available_memory_on_the_cpu_is_within_the_machine_and_the_cgroup_limit(tmp_path):
    available = available_bytes(torch.device("cpu"))
    assert 0 < available <= psutil.virtual_memory().total
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("max\n")
    (v2 / "memory.current").write_text("1000\n")
    assert cgroup_free_bytes(v2, proc) is None  # no limit
    (v2 / "memory.max").write_text("4096\n")
    assert cgroup_free_bytes(v2, proc) == 3096
    (v2 / "memory.stat").write_text("anon 400\ninactive_file 600\nactive_file 0\n")
    assert cgroup_free_bytes(v2, proc) == 3696  # the inactive file cache is reclaimed before an OOM kill
    # a SLURM job's cgroup nested under its parent's: the tighter limit binds
    job = v2 / "slurm" / "job_7"
    job.mkdir(parents=True)
    (v2 / "slurm" / "memory.max").write_text("3000\n")
    (v2 / "slurm" / "memory.current").write_text("1000\n")
    (job / "memory.max").write_text("max\n")
    (job / "memory.current").write_text("800\n")
    proc.write_text("0::/slurm/job_7\n")
    assert cgroup_free_bytes(v2, proc) == 2000
    (job / "memory.max").write_text("1000\n")
    assert cgroup_free_bytes(v2, proc) == 200
    v1 = tmp_path / "v1"
    (v1 / "memory" / "slurm").mkdir(parents=True)
    proc.write_text("4:memory:/slurm\n0::/\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    (v1 / "memory" / "memory.usage_in_bytes").write_text("5\n")
    assert cgroup_free_bytes(v1, proc) is None
    (v1 / "memory" / "slurm" / "memory.limit_in_bytes").write_text("100\n")
    (v1 / "memory" / "slurm" / "memory.usage_in_bytes").write_text("50\n")
    (v1 / "memory" / "slurm" / "memory.stat").write_text("cache 30\ntotal_inactive_file 20\n")
    assert cgroup_free_bytes(v1, proc) == 70
    assert cgroup_free_bytes(tmp_path / "absent", proc) is None


@pytest.fixture(scope="module")
def cyclegan_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run(compose_config([*TINY_CYCLEGAN, "logger=none"], out))
    return out / "checkpoints" / "last.ckpt"


def translate_overrides(ckpt, source, out, *extra):
    return ["task=translate", f"ckpt_path={ckpt}", f"translate.input={source}", f"translate.output={out}",
            "print_config=false", *extra]


@pytest.mark.slow
def test_a_load_size_that_cannot_fit_is_refused_before_anything_is_written(cyclegan_ckpt, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    Image.new("RGB", (45, 30), (200, 30, 30)).save(source / "a_wide.png")
    Image.new("RGB", (30, 30)).save(source / "b_square.png")
    out = tmp_path / "out"
    with pytest.raises(GdmError) as caught:
        run(compose_config(translate_overrides(cyclegan_ckpt, source, out, "translate.load_size=100000"),
                           tmp_path / "t"))
    message = str(caught.value)
    # the largest translation is named, at the size the resize gives it (short side 100000, aspect kept)
    assert f"{source / 'a_wide.png'} would be translated at 150000x100000 px (translate.load_size=100000)" in message
    assert "set translate.load_size to a smaller short side in pixels (the model was trained at 32)" in message
    assert not out.exists()


@pytest.mark.slow
def test_an_input_is_refused_or_warned_about_by_the_memory_it_needs(cyclegan_ckpt, tmp_path, monkeypatch, caplog):
    model = load_model(cyclegan_ckpt)
    source = tmp_path / "in"
    source.mkdir()
    Image.new("RGB", (64, 48)).save(source / "big.png")
    Image.new("RGB", (16, 16)).save(source / "small.png")
    files = sorted(source.glob("*.png"))
    tensor_bytes = scaled_peak_bytes(
        lambda s: translate_task.translate_image(model, Image.new("RGB", (s, s)), "AtoB", None), 64)
    need = tensor_bytes(64, 48) + 3 * 64 * 48  # the largest image's activations and its decoded pixels
    for available, outcome in ((need * 0.9, "refused"), (need * 1.5, "warned"), (need * 2.5, "quiet")):
        monkeypatch.setattr(translate_task, "available_bytes", lambda device, a=available: int(a))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gdm.tasks.translate"):
            if outcome == "refused":
                with pytest.raises(GdmError, match=r"big\.png would be translated at 64x48 px, which needs at least"):
                    translate_task.check_memory(model, files, "AtoB", None)
            else:
                translate_task.check_memory(model, files, "AtoB", None)
        warned = [r.getMessage() for r in caplog.records if "may need up to twice that" in r.getMessage()]
        assert len(warned) == (outcome == "warned"), (outcome, caplog.records)
