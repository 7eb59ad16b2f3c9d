"""Which of the repository's files a run passes through: `python experiments/files_crossed.py [OVERRIDES ...]`.

Runs `run.py` in this process with the overrides (default: the default experiment cut to one epoch of two batches
and its end-of-run evaluation, so the first FID is the last thing it logs) and prints, in the order first entered,
each file of the repository (run.py, gdm/, hydra_plugins/) whose code ran: the files a newcomer must read to follow
the run. Counted with sys.setprofile on Python function calls: a file only imported (its module and class bodies run)
does not count, one with a function or method that ran does.
"""

from __future__ import annotations

import inspect
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "test_after_fit=false", "logger=none", "print_config=false", "metrics.fid.num_samples=100"]


def main() -> None:
    overrides = sys.argv[1:] or QUICK
    seen: dict[str, None] = {}
    own = (str(ROOT / "run.py"), str(ROOT / "gdm") + "/", str(ROOT / "hydra_plugins") + "/")

    def profile(frame, event, arg):
        # a function ran: not a module's or a class's body, which run when the file is imported
        if event == "call" and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            name = frame.f_code.co_filename
            if name not in seen and name.startswith(own):
                seen[name] = None

    sys.path.insert(0, str(ROOT))
    sys.argv = [str(ROOT / "run.py"), *overrides, f"hydra.run.dir={tempfile.mkdtemp()}"]
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        import runpy

        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    files = [str(Path(f).relative_to(ROOT)) for f in seen]
    print(f"{len(files)} files: " + ", ".join(files))


if __name__ == "__main__":
    main()
