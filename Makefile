# modelsec: the two commands are `make demo` and `make test`; each sets up everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.modelsec-installed
DEMO_OUT ?= runs/demo
DEMO_MODELS ?= runs/demo-models
DEMO_COMPARE ?= runs/demo-compare
DEMO_KERAS ?= runs/demo-keras
DEMO_KERAS_COMPARE ?= runs/demo-keras-compare
DEMO_POLICIES ?= runs/demo-policies
DEMO_POLICY_COMPARE ?= runs/demo-policy-compare

.PHONY: demo test test-numerics setup system lint typecheck pytest clean weights

# A .venv with the CPU build of torch installed first (an unpinned torch pulls a multi-GB CUDA build),
# then modelsec in editable mode with its dev extras.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,dp,keras,onnx,sklearn,ray,rl,mlflow]"
	touch $(STAMP)

setup: $(STAMP)

# System packages: Fashion-MNIST (Debian's dataset-fashion-mnist) always, Chromium for the report test.
system:
	bash scripts/setup_system.sh

demo: export KERAS_HOME := $(abspath runs/keras-home)
demo: setup
	bash scripts/setup_system.sh --data-only
	$(BIN)/modelsec audit --out $(DEMO_OUT) --preset quick --samples 1000 --eps 0.03,0.1
	@echo "Report: $(DEMO_OUT)/report.html  (results: $(DEMO_OUT)/result.json)"
	# then harden small digits MLPs (seconds each) and compare them under one audit
	$(BIN)/modelsec harden --defense standard --data digits --arch mlp --epochs 10 --batch-size 32 --overwrite --quiet \
		--out $(DEMO_MODELS)/digits-base.safetensors
	$(BIN)/modelsec harden --defense pgd-at --eps 0.1 --data digits --arch mlp --epochs 10 --batch-size 32 --overwrite \
		--quiet --out $(DEMO_MODELS)/digits-pgd-at.safetensors
	$(BIN)/modelsec harden --defense fgsm-rs --eps 0.1 --data digits --arch mlp --epochs 10 --batch-size 32 --overwrite \
		--quiet --out $(DEMO_MODELS)/digits-fgsm-rs.safetensors
	$(BIN)/modelsec compare $(DEMO_MODELS)/digits-base.safetensors $(DEMO_MODELS)/digits-pgd-at.safetensors \
		$(DEMO_MODELS)/digits-fgsm-rs.safetensors --preset quick --eps 0.05,0.1 --samples 300 --mia-samples 449 \
		--reference-models 4 --out $(DEMO_COMPARE)
	@echo "Comparison: $(DEMO_COMPARE)/comparison.html  (results: $(DEMO_COMPARE)/comparison.json)"
	# finally the mission's Keras MLP (Fashion-MNIST, 2000 training records, trained as a user would), its
	# adversarially trained and DP-SGD versions trained from its initial weights on the same records, one comparison
	$(BIN)/python scripts/mission_keras_model.py $(DEMO_KERAS)
	$(BIN)/modelsec harden --base $(DEMO_KERAS)/model.keras --defense pgd-at --eps 0.1 --epochs 5 --batch-size 64 \
		--members $(DEMO_KERAS)/members.npz --nonmembers $(DEMO_KERAS)/nonmembers.npz --overwrite --quiet \
		--out $(DEMO_KERAS)/model-pgd-at.keras
	$(BIN)/modelsec harden --base $(DEMO_KERAS)/model.keras --defense dp-sgd --l2-norm-clip 1.0 --noise-multiplier 1.1 \
		--epochs 8 --batch-size 64 --lr 0.2 --members $(DEMO_KERAS)/members.npz \
		--nonmembers $(DEMO_KERAS)/nonmembers.npz --overwrite --quiet --out $(DEMO_KERAS)/model-dp-sgd.keras
	$(BIN)/modelsec compare $(DEMO_KERAS)/model.keras $(DEMO_KERAS)/model-pgd-at.keras $(DEMO_KERAS)/model-dp-sgd.keras \
		--members $(DEMO_KERAS)/members.npz --nonmembers $(DEMO_KERAS)/nonmembers.npz --preset quick --eps 0.1 \
		--samples 300 --mia-samples 1000 --max-accuracy-drop 15 --out $(DEMO_KERAS_COMPARE)
	@echo "Keras comparison: $(DEMO_KERAS_COMPARE)/comparison.html  (results: $(DEMO_KERAS_COMPARE)/comparison.json)"
	# and a reinforcement-learning policy: a CartPole PPO policy (4 min on a shared 2-core box), its SA-PPO version
	# in the baseline's observation scale (13 min there), both audited the same way (same episodes, attacks and
	# observation scale; about 10 min there)
	$(BIN)/modelsec harden-policy --env CartPole-v1 --defense standard --overwrite --quiet \
		--out $(DEMO_POLICIES)/cartpole-ppo.safetensors
	$(BIN)/modelsec harden-policy --env CartPole-v1 --defense sa-ppo --eps 1.0 --overwrite --quiet \
		--scale-from $(DEMO_POLICIES)/cartpole-ppo.safetensors --out $(DEMO_POLICIES)/cartpole-sa-ppo.safetensors
	$(BIN)/modelsec compare-policies --policies \
		$(DEMO_POLICIES)/cartpole-ppo.safetensors,$(DEMO_POLICIES)/cartpole-sa-ppo.safetensors \
		--env CartPole-v1 --episodes 10 --eps 0.5,1.0 --out $(DEMO_POLICY_COMPARE)
	@echo "Policy comparison: $(DEMO_POLICY_COMPARE)/comparison.html  (each policy's audit: $(DEMO_POLICY_COMPARE)/<name>/report.html)"

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/python -m pytest -q

test: setup system lint typecheck pytest

# The numerically sensitive tests again under another CPU configuration (no SIMD kernels, 2 threads): float
# reductions then run in another order, so a test that passes only by one machine's round-off fails here too.
test-numerics: setup
	ATEN_CPU_CAPABILITY=default MODELSEC_TEST_THREADS=2 $(BIN)/python -m pytest -q -m numerics

# Re-create the bundled reference weights (seeded; see scripts/train_reference_model.sh).
weights: setup
	bash scripts/train_reference_model.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
