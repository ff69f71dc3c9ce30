# synthsleep — `make demo` and `make test` each set up .venv on first use, then run.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-tools setup model model-pinned bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU torch by default; a user with a GPU installs a CUDA torch into .venv first and it is kept.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/synthsleep demo

# Tools some tests drive (Debian's chromium + chromedriver for the ward view's browser test,
# promtool from Debian's prometheus for the alert rules' own unit tests), installed when missing
# and root; otherwise those tests skip and say why.
TEST_TOOLS := chromium:chromium chromedriver:chromium-driver promtool:prometheus
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; } \
	    || echo "could not install$$missing: the tests that need them will be skipped"; \
	else echo "missing$$missing (not root, no apt-get): the tests that need them will be skipped"; fi

test: $(STAMP) test-tools
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

# The bundled model's recipe. Its phases are time-boxed (train_small.toml's max_minutes x 1.3), so
# a slower CPU trains fewer steps: make model-pinned runs the same recipe with every phase pinned
# to the step counts the bundled model reached: a build comparable across machines, taking as long
# as the machine needs (~55 min on 2 idle cores of the machine that built it; an AVX2-only EPYC ran
# multimodal pretraining at 1.42 s a step against its 0.55, so ~2.5 h there).
MODEL_RECIPE := --domain-randomisation --budget-scale 1.3 --late-start 0.5 --subject delta_hi_hz=2 --subject eog_central=0 --subject eog_noise_uv=0 --subject wake_gain=1 --subject quiet_wake=0
PINNED_STEPS := --set pretrain_unimodal.max_minutes=0 --set pretrain_unimodal.steps=360 --set pretrain_multimodal.max_minutes=0 --set finetune.window_max_minutes=0 --set finetune.window_steps=1175 --set finetune.night_max_minutes=0 --set finetune.night_passes=130

model: $(STAMP)
	$(BIN)/python -m synthsleep.offline_training.make_model --out synthsleep/assets $(MODEL_RECIPE)

# SEED=1 (2, ...): the same recipe with other subjects and another initialisation, into its own
# folder; recipes differ by less than builds of one recipe do, so compare them over seeds. A variant:
# make model-pinned SEED=0 MODEL_RECIPE="..." PINNED_DIR=runs/my_variant_seed0
SEED ?= 0
PINNED_DIR ?= runs/model_pinned_seed$(SEED)
model-pinned: $(STAMP)
	$(BIN)/python -m synthsleep.offline_training.make_model --out $(PINNED_DIR)/assets --work $(PINNED_DIR) $(MODEL_RECIPE) $(PINNED_STEPS) --no-label-study --set seed=$(SEED)

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check synthsleep tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
