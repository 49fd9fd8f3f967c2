"""Reduced end-to-end runs of issue 9's experiment paths: the residual backbone, budget
(mixed-bit) PaBT runs, ABC-Net of other widths, the frontier and validation-based
selection (tiny data, a few steps)."""

import json
import os
import subprocess
import sys

import pytest

from experiments import frontier, select_schedule, train
from experiments.common import collect_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = dict(
    epochs=1, steps=6, train_limit=384, validation_limit=128, test_limit=128, verify_samples=16,
    model_kwargs={"filters": [8, 8, 8, 8], "stem_filters": 8}, prune_begin=0.1, prune_end=0.6,
    decay_steps=0, verbose=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontier")
    runs = {
        "pabt_s0": dict(method="pabt", convert=False),  # the frontier converts model.keras itself
        "pabt_b2_s0": dict(method="pabt", budget=2.0, convert=False),
        "abc_2x1_s0": dict(method="abc", model_kwargs=dict(TINY["model_kwargs"], abc_bases=[2, 1])),
    }
    results = {name: train.train(dict(TINY, output_dir=str(root / "runs" / name), **extra))
               for name, extra in runs.items()}  # fmt: skip
    return root, results


def test_budget_run_ends_at_its_budget(comparison):
    _, results = comparison
    budget = results["pabt_b2_s0"]
    assert 1.0 < budget["mean_binary_convs"] <= 2.0 + 1e-9
    assert budget["mean_binary_convs"] > 2.0 - 1.0  # stopped at the budget, not at a BNN
    assert results["pabt_s0"]["mean_binary_convs"] == 1.0
    assert results["abc_2x1_s0"]["mean_binary_convs"] == 2.0
    assert results["abc_2x1_s0"]["found_bconvs"] == 4 * 2  # every active conv is an LceBconv2d


def test_frontier_measures_every_point_and_judges_dominance(comparison):
    root, results = comparison
    points = frontier.measure(collect_runs([str(root)]), threads=1, rounds=1, repeats=1)
    labels = {p["label"]: p for p in points}
    assert set(labels) == {"PaBT → BNN", "PaBT budget 2", "ABC-Net 2/1"}
    assert labels["PaBT → BNN"]["latency_vs_bnn"] == pytest.approx(1.0)
    for p in points:
        assert p["latency_ms"] > 0 and p["flatbuffer_bytes"] > 0
        assert p["accuracy_mean"] == results[p["key"].split(":")[1] + "_s0"]["test_accuracy"]
    assert labels["ABC-Net 2/1"]["binary_macs"] == 2 * labels["PaBT → BNN"]["binary_macs"]
    assert labels["ABC-Net 2/1"]["latency_vs_bnn"] > 1.0
    verdict = frontier.dominance(points)
    abc, budget = labels["ABC-Net 2/1"], labels["PaBT budget 2"]
    dominated = any(p["latency_ms"] <= abc["latency_ms"] and p["accuracy_mean"] >= abc["accuracy_mean"]
                    for p in (labels["PaBT → BNN"], budget))  # fmt: skip
    assert len(verdict) == 1 and verdict[0].startswith("ABC-Net 2/1")
    assert ("NOT dominated" in verdict[0]) == (not dominated)
    text = frontier.markdown(points, verdict, "cmd", 1)
    assert text.count("| ABC-Net") == 1 and "× PaBT BNN" in text
    assert frontier.plot(points, str(root / "frontier.png"))


def test_frontier_measures_latency_on_the_runs_that_kept_their_model(comparison, tmp_path):
    """Model files are not committed: a seed without model.keras counts for accuracy, the
    latency comes from the seeds that have one, and the table says which; a point with no
    model at all is an error naming its runs."""
    import shutil

    root, results = comparison
    for seed, keep in ((0, True), (1, False)):
        for name in ("pabt", "abc_2x1"):
            run = tmp_path / "cmp" / "runs" / f"{name}_s{seed}"
            if keep:
                shutil.copytree(root / "runs" / f"{name}_s0", run)
            else:
                run.mkdir(parents=True)
                result = dict(results[f"{name}_s0"], test_accuracy=0.25)
                result["config"] = dict(result["config"], seed=seed)
                (run / "results.json").write_text(json.dumps(result))
    points = frontier.measure(collect_runs([str(tmp_path / "cmp")]), threads=1, rounds=1, repeats=1)
    assert len(points) == 2
    for p in points:
        assert p["seeds"] == [0, 1] and p["latency_seeds"] == [0]
        assert len(p["latency_ms_per_run"]) == 1 and p["latency_ms"] > 0
        kept = results[p["key"].split(":")[1] + "_s0"]["test_accuracy"]
        assert p["accuracy_mean"] == pytest.approx((kept + 0.25) / 2)
    text = frontier.markdown(points, frontier.dominance(points), "cmd", 1)
    assert text.count(" (seed 0) |") == 2 and "not on this machine" in text
    config = results["pabt_s0"]["config"]
    assert text.startswith(f"# Accuracy–latency frontier: {config['dataset']} / {config['model']}\n")
    os.remove(tmp_path / "cmp" / "runs" / "abc_2x1_s0" / "model.keras")
    with pytest.raises(ValueError, match=r"No trained model \(model.keras\).*abc_2x1_s0.*abc_2x1_s1"):
        frontier.measure(collect_runs([str(tmp_path / "cmp")]), threads=1, rounds=1, repeats=1)


def _write_run(root, name, seed, val, test=0.5):
    run = root / "runs" / f"{name}_s{seed}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(
        {"config": dict(train.DEFAULTS, seed=seed), "val_accuracy": val, "test_accuracy": test}))


def test_selection_uses_validation_not_test(tmp_path):
    for variant, val, test in (("pabt_a", 0.80, 0.90), ("pabt_b", 0.85, 0.70)):
        for seed in (0, 1):
            _write_run(tmp_path, variant, seed, val, test)
    rows, best = select_schedule.select(collect_runs([str(tmp_path)]), "pabt")
    assert best["variant"].endswith(":pabt_b") and [r["val_mean"] for r in rows] == [0.85, 0.80]
    (tmp_path / "runs" / "pabt_b_s1" / "results.json").write_text(json.dumps(
        {"config": dict(train.DEFAULTS, seed=1), "val_accuracy": None, "test_accuracy": 0.7}))
    with pytest.raises(ValueError, match="validation"):
        select_schedule.select(collect_runs([str(tmp_path)]), "pabt")
    # A variant trained on another backbone does not compete.
    (tmp_path / "runs" / "pabt_b_s1" / "results.json").write_text(json.dumps(
        {"config": dict(train.DEFAULTS, seed=1, model="fmnist_resnet"), "val_accuracy": 0.9, "test_accuracy": 0.7}))
    with pytest.raises(ValueError, match="fmnist_resnet"):
        select_schedule.select(collect_runs([str(tmp_path)]), "pabt")


def test_selection_needs_every_seed_to_win(tmp_path):
    for seed, val in ((0, 0.80), (1, 0.82), (2, 0.84)):
        _write_run(tmp_path, "pabt_full", seed, val)
    _write_run(tmp_path, "pabt_stopped", 0, 0.95)  # best mean, but one seed of three
    rows, best = select_schedule.select(collect_runs([str(tmp_path)]), "pabt")
    assert best["variant"].endswith(":pabt_full") and best["val_mean"] == pytest.approx(0.82)
    assert [(r["variant"].split(":")[1], r["competes"]) for r in rows] == [
        ("pabt_full", True), ("pabt_stopped", False)]
    # Disjoint seed sets: no variant ran every seed, so nothing can be chosen.
    _write_run(tmp_path, "pabt_other", 3, 0.99)
    with pytest.raises(ValueError, match=r"every seed \[0, 1, 2, 3\]"):
        select_schedule.select(collect_runs([str(tmp_path)]), "pabt")


def test_selection_report_names_runs_relative_to_itself(tmp_path):
    """The report and winner file are read in the repository, not on the machine that
    wrote them: comparison directories relative to the report's folder."""
    for seed in (0, 1):
        _write_run(tmp_path / "select" / "pabt_x", "pabt_x", seed, 0.6 + seed / 100)
        _write_run(tmp_path / "select" / "pabt_y", "pabt_y", seed, 0.5)
    report, winner = tmp_path / "report.md", tmp_path / "report.winner"
    dirs = ",".join(str(tmp_path / "select" / v) for v in ("pabt_x", "pabt_y"))
    cmd = [sys.executable, "-m", "experiments.select_schedule", f"--comparisons={dirs}",
           f"--output={report}", f"--winner_file={winner}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert winner.read_text() == "select/pabt_x:pabt_x\n"
    rows = [line for line in report.read_text().splitlines() if line.startswith("| select/")]
    assert [r.split(" | ")[0] for r in rows] == ["| select/pabt_x:pabt_x", "| select/pabt_y:pabt_y"]
    assert "60.50 ± 0.71" in rows[0]


def test_residual_backbone_trains_and_converts(tmp_path):
    results = train.train(dict(TINY, model="fmnist_resnet", method="pabt", output_dir=str(tmp_path),
                               model_kwargs={"stage_filters": [8, 8, 16], "stem_filters": 8}))  # fmt: skip
    assert results["mean_binary_convs"] == 1.0 and results["found_bconvs"] == 6
    assert results["verification"]["top1_agreement"] == 1.0


def test_selection_top_writes_the_best_competing_variants(tmp_path):
    """A screening round: `--top 2` writes the two best variants run on every seed, best
    first; a variant with fewer seeds is never among them."""
    for name, val in (("pabt_a", 0.70), ("pabt_b", 0.80), ("pabt_c", 0.75)):
        for seed in (0, 1):
            _write_run(tmp_path / "select" / name, name, seed, val)
    _write_run(tmp_path / "select" / "pabt_d", "pabt_d", 0, 0.99)  # one seed only
    winner = tmp_path / "top.winner"
    dirs = ",".join(str(tmp_path / "select" / v) for v in ("pabt_a", "pabt_b", "pabt_c", "pabt_d"))
    cmd = [sys.executable, "-m", "experiments.select_schedule", f"--comparisons={dirs}",
           f"--output={tmp_path / 'r.md'}", f"--winner_file={winner}", "--top=2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert winner.read_text() == "select/pabt_b:pabt_b\nselect/pabt_c:pabt_c\n"


def test_point_labels_name_latency_targets_budgets_and_baselines():
    assert frontier.point_label({"method": "pabt"}) == ("PaBT", "PaBT → BNN")
    assert frontier.point_label({"method": "pabt", "latency_budget_x_bnn": 1.5}) == ("PaBT", "PaBT latency 1.5× BNN")
    assert frontier.point_label({"method": "pabt", "latency_budget_ms": 0.3}) == ("PaBT", "PaBT latency 0.3 ms")
    assert frontier.point_label({"method": "pabt", "budget": 1.8, "mac_weighted": True}) == (
        "PaBT", "PaBT budget 1.8 (MAC-weighted)")
    assert frontier.point_label({"method": "bnn_bireal"}) == ("BNN", "Bi-Real-style BNN")
    assert frontier.point_label({"method": "float"}) == ("full precision", "full precision")
    # Only a PaBT run pruned all the way is the BNN reference of the "× PaBT BNN" column.
    assert frontier._is_pabt_bnn({"method": "pabt"})
    assert not frontier._is_pabt_bnn({"method": "pabt", "latency_budget_x_bnn": 2})
    assert not frontier._is_pabt_bnn({"method": "pabt", "budget": 2})


def test_frontier_table_and_plot_take_baselines_without_binary_convs(comparison):
    """A CamVid frontier also shows the BNN baselines and full precision, which record no
    mean binary convolutions: a "—" in the table, their own markers in the plot."""
    root, _ = comparison
    points = frontier.measure(collect_runs([str(root)]), threads=1, rounds=1, repeats=1)
    float_point = dict(points[0], family="full precision", label="full precision", key="x:float",
                       mean_binary_convs=None, binary_macs=0)  # fmt: skip
    text = frontier.markdown(points + [float_point], frontier.dominance(points), "cmd", 1)
    row = next(line for line in text.splitlines() if line.startswith("| full precision"))
    assert row.split(" | ")[3] == "—"
    assert frontier.plot(points + [float_point], str(root / "frontier_baselines.png"))


def test_latency_target_lines_judge_each_run_within_five_percent_either_side():
    point = {"label": "PaBT latency 1.5× BNN", "latency_target_x_bnn": 1.5, "latency_seeds": [3, 4],
             "latency_vs_bnn_per_run": [1.47, 1.52],
             "latency_target_ms_per_run": [3.0, 3.0], "in_run_measured_ms_per_run": [2.9, 2.95]}  # fmt: skip
    (line,) = frontier.latency_target_lines([point, {"label": "PaBT → BNN"}])
    here, in_run = line.split("; in the run")
    assert "0.980, 1.013 of the target: met (1 above the target)" in here  # seed 4 is 1.3 % above
    assert "0.967, 0.983 of the target: met" in in_run and "above" not in in_run
    point["latency_vs_bnn_per_run"] = [1.47, 1.60]
    assert "0.980, 1.067 of the target: NOT met" in frontier.latency_target_lines([point])[0]  # 6.7 % above
    point["latency_vs_bnn_per_run"] = [1.40, 1.49]
    assert "0.933, 0.993 of the target: NOT met" in frontier.latency_target_lines([point])[0]  # 6.7 % below
    point["latency_vs_bnn_per_run"] = [1.44, 1.49]
    line = frontier.latency_target_lines([point])[0]
    assert ": here 1.440×, 1.490× the PaBT BNN = 0.960, 0.993 of the target: met" in line


def test_in_run_measurement_prefers_the_twin_anchored_one():
    run = {"measured_latency_ms": 9.8, "measured_latency_bnn_anchored_ms": 11.08}
    assert frontier.in_run_ms(run) == 11.08
    assert frontier.in_run_ms({"measured_latency_ms": 13.6}) == 13.6  # before the twin existed
    assert frontier.in_run_ms({}) is None


def _point(label, ms, score, **extra):
    return dict({"label": label, "family": "PaBT", "latency_ms": ms, "score_mean": score,
                 "accuracy_mean": score}, **extra)  # fmt: skip


def test_equal_latency_lines_interpolate_each_budget_family_at_the_target_points_latency():
    points = [
        _point("PaBT → BNN", 1.0, 0.70),
        _point("PaBT budget 2", 2.0, 0.73),
        _point("PaBT budget 1.7 (MAC-weighted)", 1.8, 0.71),
        _point("PaBT latency 1.5× BNN", 1.5, 0.716, latency_target_x_bnn=1.5),
        {"label": "ABC-Net 2/1", "family": "ABC-Net", "latency_ms": 1.5, "score_mean": 0.9, "accuracy_mean": 0.9},
    ]
    plain, mac = frontier.equal_latency_lines(points)
    # Plain: halfway between the BNN (70 %) and budget 2 (73 %) is 71.5 %: +0.10 p.p.
    assert "between PaBT → BNN and PaBT budget 2: 71.50 %, difference +0.10 p.p.: met" in plain
    # MAC-weighted: the BNN and its own budget point only (not the plain budget 2):
    # 70 + (0.5 / 0.8) * 1 = 70.625 %, so 71.6 - 70.625 = +0.975 p.p.
    assert "(MAC-weighted) at the same latency, between PaBT → BNN and PaBT budget 1.7 (MAC-weighted)" in mac
    assert "70.62 %, difference +0.98 p.p.: met" in mac
    points[3]["score_mean"] = 0.712  # 0.30 p.p. below the plain interpolation
    assert "difference -0.30 p.p.: NOT met (goal >= -0.2)" in frontier.equal_latency_lines(points)[0]
    points[3]["latency_ms"] = 2.5  # beyond every budget point: no extrapolation
    assert "outside that family's measured range (1.000–2.000 ms), not interpolated" in (
        frontier.equal_latency_lines(points)[0])
    # No latency-target point, or no budget point of a ranking: no line for it.
    assert frontier.equal_latency_lines(points[:3]) == []
    assert len(frontier.equal_latency_lines([points[0], points[1], points[3]])) == 1


def test_rerender_rewrites_the_table_from_the_stored_measurement(tmp_path):
    """`--rerender` re-judges a stored frontier.json (no models, no timing): the table gets
    today's lines, the stored points and command are kept; a missing JSON is a usage error."""
    point = dict(_point("PaBT → BNN", 1.0, 0.70), key="c:pabt", seeds=[3], latency_seeds=[3],
                 accuracy_std=0.0, val_accuracy_mean=0.71, val_accuracy_std=0.0, mean_binary_convs=1.0,
                 binary_macs=1e6, latency_vs_bnn=1.0, flatbuffer_bytes=2048, deployed_input_size=None)  # fmt: skip
    target = dict(point, key="c:lat", label="PaBT latency 1.5× BNN", latency_ms=1.5, score_mean=0.72,
                  accuracy_mean=0.72, latency_target_x_bnn=1.5, latency_vs_bnn_per_run=[1.52])  # fmt: skip
    budget = dict(point, key="c:b2", label="PaBT budget 2", latency_ms=2.0, score_mean=0.72, accuracy_mean=0.72)
    stored = {"points": [point, target, budget], "verdict": [], "command": "python -m experiments.frontier --threads 1"}
    (tmp_path / "frontier.json").write_text(json.dumps(stored))
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "experiments.frontier", "--rerender", "--output_dir", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "frontier.md").read_text()
    assert "1.013 of the target: met" in text
    assert "between PaBT → BNN and PaBT budget 2: 71.00 %, difference +1.00 p.p.: met" in text
    assert json.loads((tmp_path / "frontier.json").read_text())["command"] == stored["command"]
    assert (tmp_path / "frontier.png").stat().st_size > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "experiments.frontier", "--rerender", "--output_dir", str(empty)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode != 0 and "--rerender needs" in out.stderr and "frontier.json" in out.stderr
    assert not (empty / "frontier.md").exists()
