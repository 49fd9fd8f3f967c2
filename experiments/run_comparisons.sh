#!/usr/bin/env bash
# The comparisons behind results/fashion_mnist_12ep, results/fmnist_resnet and
# results/frontier (issue 9), in the order they were run. Run from the repository root
# with the venv's python (PY=.venv/bin/python). Every command resumes: finished runs are
# reused, a run stopped mid-training continues from its last finished epoch, so the
# script can be stopped and started again at any time. Run it from a checkout of one
# commit that nobody edits meanwhile (e.g. `git worktree add ../exp HEAD`, with results/
# linked back): every run imports pabt_tf when it starts.
#
# Seeds 3, 4, 5 chose nothing: the PaBT schedule (experiments.train defaults) was
# selected on validation accuracy of seeds 0-2 (results/schedule_selection.md), and no
# setting below was tuned on these seeds.
set -euo pipefail
PY=${PY:-python}
SEEDS=${SEEDS:-3,4,5}

# 1. Longer schedule: fmnist_cnn at 12 epochs (3x the 4-epoch comparison).
# Goal: PaBT's BNN at least 0.5 p.p. above the STE BNN.
$PY -m experiments.compare --methods pabt,bnn --seeds "$SEEDS" --epochs 12 --evaluate_mbn \
    --goal_margin 0.5 --output_dir results/fashion_mnist_12ep

# 2. The paper's backbone family: a Bi-Real/IR-Net style residual net, 4 epochs.
# Goal: PaBT's BNN at least 1.0 p.p. above the best BNN baseline. --reconvert: seed 3's
# runs were trained by a checkout whose export failed to import; they are converted again
# from their model.keras (no retraining).
$PY -m experiments.compare --model fmnist_resnet --methods bnn,bnn_bireal,pabt,float,bnn_bop,abc \
    --seeds "$SEEDS" --epochs 4 --evaluate_mbn --reconvert --output_dir results/fmnist_resnet

# 2b. The residual-backbone goal was missed with the default schedule (chosen on
# fmnist_cnn), so PaBT variants were tried on this backbone's own validation split,
# seeds 0-2: the default; a later and longer multi-base phase (pruning from 20 % to 60 %
# of training); Bi-Real's approx_sign pseudo-gradient in the PaBT layers (what the best
# baseline uses); self-distillation from the unpruned network (lambda = 0.5). (They ran as
# two parallel streams with `--threads 1` each; add it to share the 2 cores the same way.)
SEL=results/fmnist_resnet_select
RES="--model fmnist_resnet --methods pabt --seeds 0,1,2 --epochs 4"
$PY -m experiments.compare $RES --output_dir $SEL/default
$PY -m experiments.compare $RES --prune_begin 0.2 --prune_end 0.6 --tag _late --output_dir $SEL/late
$PY -m experiments.compare $RES --model_kwargs '{"activation_quantizer": "approx_sign"}' --tag _approx \
    --output_dir $SEL/approx
# Self-distillation was stopped after seed 0 (validation 82.80 % vs 88.48 % for the
# default on seed 0): its teacher, taken at the first pruning step, is barely trained.
$PY -m experiments.compare $RES --distill_weight 0.5 --tag _distill --output_dir $SEL/distill --seeds 0
# Second round, on the first round's best: approx_sign with a shorter pruning ramp.
$PY -m experiments.compare $RES --model_kwargs '{"activation_quantizer": "approx_sign"}' --prune_end 0.25 \
    --tag _approx_early --output_dir $SEL/approx_early
$PY -m experiments.select_schedule --comparisons $SEL/default,$SEL/late,$SEL/approx,$SEL/approx_early,$SEL/distill \
    --output results/fmnist_resnet_selection.md
# The chosen variant (approx) on seeds 3-5, in a table with the baselines of step 2.
$PY -m experiments.compare --model fmnist_resnet --methods pabt --epochs 4 --evaluate_mbn \
    --model_kwargs '{"activation_quantizer": "approx_sign"}' --tag _approx --seeds "$SEEDS" \
    --merge results/fmnist_resnet/summary.json --output_dir results/fmnist_resnet_approx

# 2c. Does the residual-backbone margin survive a longer schedule? The chosen variant
# (approx, chosen at 4 epochs in 2b) and the two best BNN baselines of step 2 at 12 epochs
# (3x), seeds 3-5, nothing re-chosen. Run as two parallel streams with `--threads 1` each.
R12=results/fmnist_resnet_12ep
$PY -m experiments.compare --model fmnist_resnet --methods pabt --epochs 12 --threads 1 --evaluate_mbn \
    --model_kwargs '{"activation_quantizer": "approx_sign"}' --tag _approx --seeds "$SEEDS" \
    --output_dir $R12/pabt_approx
$PY -m experiments.compare --model fmnist_resnet --methods bnn_bireal,bnn --epochs 12 --threads 1 \
    --seeds "$SEEDS" --output_dir $R12/baselines
# The table: PaBT's runs (reused) with the baselines' rows merged in.
$PY -m experiments.compare --model fmnist_resnet --methods pabt --epochs 12 --threads 1 --evaluate_mbn \
    --model_kwargs '{"activation_quantizer": "approx_sign"}' --tag _approx --seeds "$SEEDS" \
    --merge $R12/baselines/summary.json --output_dir $R12/pabt_approx

# 3. Accuracy-latency frontier on fmnist_cnn, 4 epochs: PaBT budgets vs ABC-Net widths.
$PY -m experiments.compare --methods pabt --seeds "$SEEDS" --epochs 4 --output_dir results/frontier/pabt_bnn
for budget in 1.5 2 3 4.5; do
    $PY -m experiments.compare --methods pabt --seeds "$SEEDS" --epochs 4 --budget "$budget" \
        --tag "_b$budget" --output_dir "results/frontier/pabt_b$budget"
done
for bases in 1,1 2,1 2,2 3,3; do
    m=${bases%,*}; n=${bases#*,}
    $PY -m experiments.compare --methods abc --seeds "$SEEDS" --epochs 4 \
        --model_kwargs "{\"abc_bases\": [$m, $n]}" --tag "_${m}x${n}" \
        --output_dir "results/frontier/abc_${m}x${n}"
done
# Latency is measured last, on a quiet machine, with the export of the day.
$PY -m experiments.frontier --output_dir results/frontier --comparisons \
    results/frontier/pabt_bnn,results/frontier/pabt_b1.5,results/frontier/pabt_b2,results/frontier/pabt_b3,results/frontier/pabt_b4.5,results/frontier/abc_1x1,results/frontier/abc_2x1,results/frontier/abc_2x2,results/frontier/abc_3x3
