"""Re-run the mutation audit: put one deliberate bug at a time into a copy of the code and check that the
tests meant to catch it fail.

Each :class:`Mutation` replaces an exact snippet of one source file (it must occur exactly once) and
names the few tests that should fail because of it. The check:

1. snapshots ``voxprint/``, ``tests/``, ``configs/``, ``recipes/`` and ``pyproject.toml`` into a
   temporary folder (the working tree is never touched, and every run below sees the same code even
   while someone edits the tree);
2. runs every selected test on an unmutated copy: they must pass, or the check would mean nothing;
3. for each mutation, applies it to a fresh copy and runs its tests there (``PYTHONPATH`` and the
   working directory are the copy, so the copy's ``voxprint`` is the one imported).

A mutation is *caught* when pytest exits 1 with at least one failed test, *survived* when its tests
pass, and an *error* otherwise (a timeout, a collection error, or only fixture errors: a mutation
should make a test fail, not break the code around it).

Usage::

    .venv/bin/python tests/mutation/run_mutations.py            # everything (a few minutes)
    .venv/bin/python tests/mutation/run_mutations.py --list
    .venv/bin/python tests/mutation/run_mutations.py --only torch-rng lock

Exit status: 0 every mutation caught; 1 a mutation survived; 2 the check could not be made (a stale
snippet, the unmutated tests failing, no data) or a mutation ended in an error.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[2]
#: What a copy holds: everything the selected tests read (configs/ and recipes/ hold shipped YAMLs).
COPIED = ("voxprint", "tests", "configs", "recipes", "pyproject.toml")
PYTEST_OPTIONS = ("-x", "-q", "-p", "no:cacheprovider")
DEFAULT_TIMEOUT_S = 600.0

EXIT_ALL_CAUGHT, EXIT_SURVIVED, EXIT_BROKEN = 0, 1, 2


class StaleMutation(Exception):
    """A mutation's ``old`` snippet no longer occurs exactly once in its file."""


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug and the tests that must catch it.

    Attributes:
        name: short unique name (``--only`` takes it).
        file: the source file, relative to the repository root.
        old: exact snippet of the current file; it must occur exactly once.
        new: what replaces it (the bug).
        tests: pytest node ids that must fail once the bug is in (kept few: each run is a pytest process).
        bug: the bug in words.
    """

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    bug: str

    def mutated(self, text: str) -> str:
        """``text`` with the bug in.

        Args:
            text: the current content of :attr:`file`.

        Returns:
            ``text`` with :attr:`old` replaced by :attr:`new`.

        Raises:
            StaleMutation: :attr:`old` does not occur exactly once in ``text``.
        """
        count = text.count(self.old)
        if count != 1:
            raise StaleMutation(f"{self.name}: the snippet to replace occurs {count} times in {self.file} "
                                "(expected once); update it to the current code")
        return text.replace(self.old, self.new)

    def apply(self, root: Path) -> None:
        """Put the bug into the copy of :attr:`file` under ``root``.

        Args:
            root: a copy of the repository (never the working tree).

        Raises:
            StaleMutation: :attr:`old` does not occur exactly once there.
        """
        path = root / self.file
        path.write_text(self.mutated(path.read_text(encoding="utf-8")), encoding="utf-8")


TRAINER = "voxprint/training/trainer.py"
RESUME_KILLED = "tests/test_resume.py::test_sigkilled_run_resumes_exactly_and_holds_its_lock_while_alive"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "torch-rng", TRAINER,
        old='    torch.set_rng_state(state["torch_rng"])\n',
        new="",
        tests=(RESUME_KILLED,),
        bug="resume does not restore torch's random generator",
    ),
    Mutation(
        "resume-lr", TRAINER,
        old='    run.start_epoch, run.lr = state["epoch"] + 1, run.history[-1]["lr"]\n',
        new='    run.start_epoch, run.lr = state["epoch"] + 1, run.config["optim"]["lr"]\n',
        tests=(RESUME_KILLED,),
        bug="resume restarts from the config's learning rate instead of the checkpoint's",
    ),
    Mutation(
        "resume-plateau", TRAINER,
        old='    run.plateau, run.history = PlateauState(**state["plateau"]), state["history"]\n',
        new='    run.plateau, run.history = PlateauState(), state["history"]\n',
        tests=(RESUME_KILLED,),
        bug="resume forgets the plateau / early-stopping state",
    ),
    Mutation(
        "atomic-write", "voxprint/fileio.py",
        old="    tmp = write_temp(path, write)\n",
        # The os.replace that follows then moves the target onto itself: a no-op.
        new='    with open(path, "wb") as handle:\n        write(handle)\n    tmp = path\n',
        tests=("tests/test_fileio.py::test_sigkill_mid_rewrite_keeps_the_complete_old_file",),
        bug="atomic_write writes straight into the target",
    ),
    Mutation(
        "grad-clip", TRAINER,
        old='        nn.utils.clip_grad_norm_(run.step_module.parameters(), optim_cfg["clip_grad_norm"])\n',
        new="",
        tests=("tests/test_training.py::test_gradient_clipping_bounds_every_step",),
        bug="gradients are not clipped",
    ),
    Mutation(
        "loss-lr-scale", TRAINER,
        old='{"params": list(loss_fn.parameters()), "lr_scale": cfg["loss_lr_scale"]}',
        new='{"params": list(loss_fn.parameters()), "lr_scale": 1.0}',
        tests=("tests/test_training.py::test_loss_lr_scale_scales_the_loss_parameters_steps",),
        bug="optim.loss_lr_scale is ignored",
    ),
    Mutation(
        "specaugment", TRAINER,
        old='TrainingStep(model, loss_fn, build_spec_augment(config["specaugment"]))',
        new="TrainingStep(model, loss_fn, None)",
        tests=("tests/test_training.py::test_augmentation_changes_what_is_trained[specaugment]",),
        bug="train() does not apply SpecAugment",
    ),
    Mutation(
        "regularizer", TRAINER,
        old="        penalty = run.regularizer(run.step_module, epoch) if run.regularizer is not None else None\n",
        new="        penalty = None\n",
        tests=("tests/test_orthogonal.py::test_train_applies_the_regularizer",),
        bug="train() does not add the orthogonal regulariser's penalty",
    ),
    Mutation(
        "wave-augment", TRAINER,
        old='    train_set = CropDataset(train_folder, augment=config["augment"], **common)\n',
        new="    train_set = CropDataset(train_folder, **common)\n",
        tests=("tests/test_training.py::test_augmentation_changes_what_is_trained[waveform-augmentation]",),
        bug="the training crops are not augmented (noise, reverb, speed)",
    ),
    Mutation(
        "multireader", TRAINER,
        old='enumerate([{"train": data_cfg["train"], "weight": data_cfg["weight"]}] + list(extra))',
        new='enumerate([{"train": data_cfg["train"], "weight": data_cfg["weight"]}])',
        tests=("tests/test_multireader.py::test_train_steps_on_every_source_with_its_weight",),
        bug="MultiReader's extra sources (data.sources) are not trained on",
    ),
    Mutation(
        "eer-self-pairs", TRAINER,
        old="torch.triu_indices(len(labels), len(labels), offset=1)",
        new="torch.triu_indices(len(labels), len(labels), offset=0)",
        tests=("tests/test_training.py::test_validation_eer_scores_distinct_pairs_only",),
        bug="the validation EER pairs each crop with itself too",
    ),
    Mutation(
        "verify-first-enroll", "voxprint/backends/verifier.py",
        old="self.backend.score(self.extract_embeddings(enroll), self.extract_embedding(test))",
        new="self.backend.score(self.extract_embeddings(enroll[:1]), self.extract_embedding(test))",
        tests=("tests/test_cli.py::test_verify_uses_every_enrollment_file_and_exits_3_on_reject",),
        bug="verify uses only the first --enroll recording",
    ),
    Mutation(
        "threshold-all-scores", "voxprint/cli/verification.py",
        old="_write_threshold(model.model_dir, result, data, options, scores[usable.labels == 0], args.target_far)",
        new="_write_threshold(model.model_dir, result, data, options, scores, args.target_far)",
        tests=("tests/test_pipeline.py::test_threshold_for_a_false_accept_rate_is_used_by_verify",),
        bug="eval --write-threshold --target-far sets the threshold on all scores, not the non-target ones",
    ),
    Mutation(
        "weights-only", "voxprint/runs/torchfile.py",
        old='torch.load(path, map_location="cpu", weights_only=True)',
        new='torch.load(path, map_location="cpu", weights_only=False)',
        tests=("tests/test_runs.py::test_a_model_file_holding_code_is_refused_and_the_code_never_runs",),
        bug="model files are unpickled with weights_only=False (a crafted file runs code)",
    ),
    Mutation(
        "weights-hash", "voxprint/inference/speaker_model.py",
        old="    elif stored != weights_hash:\n",
        new="    elif False:\n",
        tests=("tests/test_runs.py::test_bit_flipped_weights_are_refused",),
        bug="load_model does not check the weights against their stored hash",
    ),
    Mutation(
        "train-lock", TRAINER,
        old='    with RunLock(run.out_dir, "train") if run.ctx.is_main else nullcontext():\n',
        new="    with nullcontext():\n",
        tests=(RESUME_KILLED,),
        bug="train does not lock its run folder",
    ),
    Mutation(
        "resume-config-check", TRAINER,
        old='        check_resumable(state["config"], run.config, run.out_dir)\n',
        new="",
        tests=("tests/test_resume.py::test_resume_refuses_a_changed_config_whose_weights_still_fit",),
        bug="resume accepts a config that changes the run",
    ),
    Mutation(
        "backend-in-place", "voxprint/backends/backend.py",
        old=('    new = _sibling(model_dir, "new")\n'
             "    new.mkdir(parents=True)\n"
             "    try:\n"
             "        summary = _write_backend(new, ids, embeddings, utt2spk, labels, speakers, top_n, "
             "calibration_trials,\n"
             "                                 p_target, seed)\n"
             "        write_manifest(new, backend_files())\n"
             "        _fsync_folder(new)\n"
             "        _swap_in(model_dir, new)\n"
             "    except BaseException:\n"
             "        shutil.rmtree(new, ignore_errors=True)\n"
             "        raise\n"),
        new=("    new = model_dir / BACKEND_DIR\n"
             "    new.mkdir(parents=True, exist_ok=True)\n"
             "    summary = _write_backend(new, ids, embeddings, utt2spk, labels, speakers, top_n, "
             "calibration_trials,\n"
             "                             p_target, seed)\n"
             "    write_manifest(new, backend_files())\n"),
        tests=("tests/test_backend_files.py::test_a_fit_that_fails_halfway_leaves_the_previous_backend_intact"
               "[plda fit]",),
        bug="fit_backend writes into backend/ instead of a temporary folder swapped in whole",
    ),
    Mutation(
        "window-batch", "voxprint/inference/windows.py",
        old="                per_call = max(1, self.batch_frames // length)\n",
        new="                per_call = len(members)\n",
        tests=("tests/test_windows.py::test_encoder_batches_are_bounded_and_do_not_change_the_result",),
        bug="the sliding-window embedder sends every window in one encoder call",
    ),
    Mutation(
        "padding-leaks", "voxprint/models/ecapa_tdnn.py",
        old="        y = conv(x if mask is None else x * mask)\n",
        new="        y = conv(x)\n",
        tests=("tests/test_windows.py::test_an_encoder_that_claims_exact_padding_embeds_padded_segments_as_unpadded_ones",),
        bug="ECAPA-TDNN's Res2Net convolutions see a padded segment's padding",
    ),
    Mutation(
        "prepare-overwrite", "voxprint/data/folder.py",
        old="    if existing and not overwrite:\n",
        new="    if False:\n",
        tests=("tests/test_cli.py::test_prepare_never_overwrites_a_data_folder_without_being_told",),
        bug="prepare overwrites an existing data folder without --overwrite",
    ),
    Mutation(
        "skip-silently", "voxprint/cli/core.py",
        old='        print(f"voxprint: skipped {name}: {reason}", file=sys.stderr)\n',
        new="        pass\n",
        tests=("tests/test_cli.py::test_bad_files_are_counted_up_front_or_skipped_and_reported",),
        bug="--on-error skip drops bad recordings without naming them",
    ),
    Mutation(
        "unknown-config-key", "voxprint/config.py",
        old="    for key in given:\n        if key in valid:\n",
        new="    for key in given:\n        if True:\n",
        tests=("tests/test_config.py::test_typo_in_a_yaml_file",),
        bug="check_keys accepts unknown config keys",
    ),
    Mutation(
        "map-relevance", "voxprint/classical/gmm.py",
        old="np.where(has_data, (stats.first + relevance * ubm.means) / np.where(has_data, denominator, 1.0), ubm.means)",
        new="np.where(has_data, (stats.first + relevance * ubm.means) / np.where(has_data, occupancy + 1.0, 1.0), ubm.means)",
        tests=("tests/test_classical.py::test_map_adaptation_bounds_relevance_zero_is_ml_and_infinity_is_the_ubm",),
        bug="MAP adaptation divides by N + 1 instead of N + r (the relevance factor ignored)",
    ),
    Mutation(
        "llr-matrix-offsets", "voxprint/classical/gmm.py",
        old="chunk[positions // top_c] @ blocks[component] - block_offsets[component]",
        new="chunk[positions // top_c] @ blocks[component]",
        tests=("tests/test_classical.py::test_top_c_llr_with_every_component_is_the_exact_likelihood_ratio_and_the_matrix_agrees",),
        bug="the batched GMM-UBM scorer forgets the adapted means' quadratic term",
    ),
    Mutation(
        "narrowband-drawn-first", "voxprint/data/augment.py",
        old="        use_speed, use_reverb, use_babble, use_noise = rng.random(4) < (",
        new="        rng.random() if c.narrowband_prob > 0 else None\n"
            "        use_speed, use_reverb, use_babble, use_noise = rng.random(4) < (",
        tests=("tests/test_augment.py::test_narrowband_leaves_the_telephone_band_and_only_it",),
        bug="the telephone band's draw comes first and reshuffles the other effects' draws",
    ),
    Mutation(
        "fbank-unscaled", "voxprint/export/standalone.py",
        old="            mel = power @ self._scaled_banks",
        new="            mel = power @ self.banks",
        tests=("tests/test_export.py::test_the_standalone_filterbank_matches_kaldi_native_fbank",),
        bug="the torch-free filterbank forgets Kaldi's 16-bit scaling of the samples",
    ),
    Mutation(
        "tv-minimum-divergence", "voxprint/classical/ivector.py",
        old="total_variability = total_variability @ np.linalg.cholesky(moment)",
        new="total_variability = total_variability @ moment",
        tests=("tests/test_classical.py::test_total_variability_em_never_decreases_the_likelihood",),
        bug="the minimum-divergence step rescales T by the i-vectors' second moment, not by its square root",
    ),
)


@dataclass
class Outcome:
    """What the pytest run of one mutation gave.

    Attributes:
        name: the mutation's name.
        file: the mutated file.
        result: ``caught``, ``survived`` or ``error``.
        seconds: wall time of the pytest run.
        detail: the first failing test when caught, what went wrong when an error.
        output: pytest's combined stdout and stderr.
    """

    name: str
    file: str
    result: str
    seconds: float
    detail: str
    output: str


def repo_data_root() -> Path:
    """The data folder the ORIGINAL repository's tests would use, as an absolute path.

    Loads ``voxprint/paths.py`` of this repository by file name (not by import) so that its default,
    ``../shared/data`` beside the repository, is resolved from here and not from a copy, and so that
    no ``voxprint`` installed elsewhere is consulted. ``VOXPRINT_DATA`` wins, as in the tests.

    Returns:
        The absolute data root.
    """
    spec = importlib.util.spec_from_file_location("_voxprint_paths_of_repo", REPO / "voxprint" / "paths.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.data_root()).resolve()


def default_python() -> Path:
    """The repository's virtual environment's interpreter (the one its tests are run with)."""
    venv = REPO / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def copy_tree(source: Path, target: Path) -> Path:
    """Copy :data:`COPIED` from ``source`` into the new folder ``target`` (bytecode caches left out).

    Args:
        source: a repository (or a snapshot of one).
        target: the folder to create.

    Returns:
        ``target``.
    """
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=ignore, symlinks=True)
        elif path.exists():
            shutil.copy2(path, target / name)
    return target


def copy_environment(root: Path, data_root: Path) -> dict[str, str]:
    """The environment a copy's tests run in: its own code first, the original data, one thread.

    Args:
        root: the copy.
        data_root: absolute data folder (:func:`repo_data_root`).

    Returns:
        The environment variables.
    """
    env = dict(os.environ)
    # Replaces any PYTHONPATH pointing at the working tree; the venv's editable install of voxprint
    # comes after PYTHONPATH on sys.path, so the copy's code is the one imported (checked in main()).
    env.update(PYTHONPATH=str(root), VOXPRINT_DATA=str(data_root), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def imported_package(python: Path, root: Path, env: dict[str, str]) -> Path:
    """Where ``import voxprint`` finds the package when run from the copy ``root``."""
    proc = subprocess.run([str(python), "-c", "import voxprint; print(voxprint.__file__)"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot import voxprint from {root}: {proc.stderr.strip()[-500:]}")
    return Path(proc.stdout.strip()).resolve().parent


def run_pytest(python: Path, root: Path, tests: Sequence[str], env: dict[str, str],
               timeout_s: float) -> tuple[int | None, str, float]:
    """Run ``tests`` with pytest in the copy ``root``.

    The run gets its own process group, so a timeout also ends the processes its tests started
    (e.g. the training run test_resume.py kills on purpose).

    Args:
        python: the interpreter.
        root: the copy (working directory and ``PYTHONPATH``).
        tests: pytest node ids.
        env: the environment (:func:`copy_environment`).
        timeout_s: wall-clock limit.

    Returns:
        pytest's exit code (None on timeout), its combined output, and the seconds it ran.
    """
    started = time.monotonic()
    proc = subprocess.Popen([str(python), "-m", "pytest", *PYTEST_OPTIONS, *tests], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
        output = ""
    except BaseException:  # Ctrl-C: leave no test process behind
        _kill_group(proc)
        raise
    if code is None:
        _kill_group(proc)
        output, _ = proc.communicate()
    return code, output, time.monotonic() - started


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group this script started for one pytest run."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# The short test summary (pytest's default -rfE) names each failed and each errored test; it is printed
# even at -qq (pyproject's -q plus ours), which drops the "1 failed in 3s" line.
_FAILED_LINE = re.compile(r"^FAILED (.+?)(?: - .*)?$", re.MULTILINE)
_ERROR_LINE = re.compile(r"^ERROR (.+?)(?: - .*)?$", re.MULTILINE)


def classify(code: int | None, output: str) -> tuple[str, str]:
    """Judge a mutated run from pytest's exit code and output.

    Args:
        code: pytest's exit code, None when it timed out.
        output: its output, with the short test summary.

    Returns:
        ``(result, detail)``: ``caught`` with the first failed test, ``survived``, or ``error`` with
        what went wrong.
    """
    if code is None:
        return "error", "timed out"
    if code == 0:
        return "survived", "its tests pass"
    failed = _FAILED_LINE.search(output)
    if code == 1 and failed:
        return "caught", failed.group(1)
    if code == 1:
        # Only setup/teardown errors: the bug broke a fixture, not the behaviour the test checks.
        errored = _ERROR_LINE.search(output)
        return "error", f"fixture error, no test failure{f' ({errored.group(1)})' if errored else ''}"
    reasons = {2: "interrupted (collection error?)", 3: "pytest internal error", 4: "usage error (bad node id?)",
               5: "no tests collected"}
    return "error", f"pytest exit {code}: {reasons.get(code, 'unexpected')}"


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def format_table(outcomes: Sequence[Outcome]) -> str:
    """The result table: mutation, file, result, seconds, detail.

    Args:
        outcomes: one per mutation run.

    Returns:
        The table, one line per outcome under a header.
    """
    header = ("mutation", "file", "result", "seconds", "detail")
    rows = [(o.name, o.file, o.result, f"{o.seconds:.1f}", o.detail) for o in outcomes]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [row[i].rjust(widths[i]) if i == 3 else row[i].ljust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    return "\n".join(lines)


def unique(items: Sequence[str]) -> list[str]:
    """``items`` without repeats, first occurrence order kept."""
    return list(dict.fromkeys(items))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    names = [m.name for m in MUTATIONS]
    parser = argparse.ArgumentParser(description="Apply each deliberate bug to a copy of the code and check that "
                                                 "the tests named for it fail.")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=names, help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--python", type=Path, default=default_python(),
                        help="interpreter to run pytest with (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds one pytest run may take (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (their path is printed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the pytest output of every run")
    return parser.parse_args(argv)


def list_mutations() -> None:
    """Print each mutation: name, file, the bug, and the tests that must catch it."""
    for mutation in MUTATIONS:
        print(f"{mutation.name}  ({mutation.file})\n  bug:   {mutation.bug}")
        for test in mutation.tests:
            print(f"  test:  {test}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (see the module docstring).
    """
    args = parse_args(argv)
    if args.list:
        list_mutations()
        return EXIT_ALL_CAUGHT
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    data_root = repo_data_root()
    if not (data_root / "speechocean762" / "train" / "wav.scp").is_file():
        print(f"no test data under {data_root}; set VOXPRINT_DATA", file=sys.stderr)
        return EXIT_BROKEN
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="voxprint-mutations-"))
    try:
        # One snapshot for every run: a tree edited meanwhile cannot make the baseline and the
        # mutated runs test different code.
        snapshot = copy_tree(REPO, workdir / "snapshot")
        stale = []
        for mutation in chosen:
            try:
                mutation.mutated((snapshot / mutation.file).read_text(encoding="utf-8"))
            except (StaleMutation, FileNotFoundError) as exc:
                stale.append(str(exc))
        if stale:
            print("stale mutations:\n  " + "\n  ".join(stale), file=sys.stderr)
            return EXIT_BROKEN

        baseline_root = copy_tree(snapshot, workdir / "unmutated")
        env = copy_environment(baseline_root, data_root)
        package = imported_package(args.python, baseline_root, env)
        if package != (baseline_root / "voxprint").resolve():
            print(f"the copy imports voxprint from {package}, not from the copy; the check would test the wrong "
                  "code", file=sys.stderr)
            return EXIT_BROKEN
        tests = unique([t for m in chosen for t in m.tests])
        print(f"unmutated copy: {len(tests)} tests ...", flush=True)
        code, output, seconds = run_pytest(args.python, baseline_root, tests, env, args.timeout)
        if args.verbose or code != 0:
            print(tail(output) if code != 0 else output)
        if code != 0:
            print(f"the unmutated code fails its own tests (pytest exit {code}): fix that first", file=sys.stderr)
            return EXIT_BROKEN
        print(f"unmutated copy: passed ({seconds:.1f}s)", flush=True)
        if not args.keep:
            shutil.rmtree(baseline_root)

        outcomes = []
        for number, mutation in enumerate(chosen, 1):
            root = copy_tree(snapshot, workdir / mutation.name)
            mutation.apply(root)
            code, output, seconds = run_pytest(args.python, root, mutation.tests,
                                               copy_environment(root, data_root), args.timeout)
            result, detail = classify(code, output)
            outcomes.append(Outcome(mutation.name, mutation.file, result, seconds, detail, output))
            print(f"[{number}/{len(chosen)}] {mutation.name}: {result} ({seconds:.1f}s)", flush=True)
            if args.verbose or result != "caught":
                print(output if args.verbose else tail(output), flush=True)
            if not args.keep:
                shutil.rmtree(root)
    finally:
        if args.keep:
            print(f"copies kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(format_table(outcomes))
    counts = {kind: sum(o.result == kind for o in outcomes) for kind in ("caught", "survived", "error")}
    print(f"\n{counts['caught']} caught, {counts['survived']} survived, {counts['error']} errors "
          f"of {len(outcomes)} mutations in {time.monotonic() - started:.0f}s")
    if counts["survived"]:
        return EXIT_SURVIVED
    return EXIT_BROKEN if counts["error"] else EXIT_ALL_CAUGHT


if __name__ == "__main__":
    sys.exit(main())
